"""Test set-up: 8 fake CPU devices (sharding is tested for real), no network, marker gating."""
import atexit
import os
import shutil
import tempfile

os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

# One persistent XLA compilation cache per test session, shared by the xdist workers and by the
# subprocesses the tests start (they inherit the environment): a train step that several runs,
# resumes, subprocesses and tests compile alike is compiled once. The tests' tiny models make
# compilation most of the suite's time. A fresh directory each session, removed at its end, so
# nothing carries over between sessions; set JAX_COMPILATION_CACHE_DIR to choose one yourself.
if "JAX_COMPILATION_CACHE_DIR" not in os.environ:
  _XLA_CACHE = tempfile.mkdtemp(prefix="slm_jax_tests_xla_cache_")
  os.environ["JAX_COMPILATION_CACHE_DIR"] = _XLA_CACHE
  atexit.register(shutil.rmtree, _XLA_CACHE, ignore_errors=True)
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")
# XLA:CPU's LLVM backend at -O0: compiling, not running, is what the tiny test models spend their
# time on, and the HLO passes (fusion, layout, sharding) still run as they do at any level.
if (os.environ["JAX_PLATFORMS"] == "cpu"
    and "xla_backend_optimization_level" not in os.environ.get("XLA_FLAGS", "")):
  os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") +
                             " --xla_backend_optimization_level=0").strip()

# Where PyTorch comes as a CUDA build (pip's torch==2.13.0 on any Python but 3.11 here, and on
# GPU hosts), transformers imports triton; triton's native library segfaults when it loads after
# TensorFlow's in one process (seen with Python 3.12, TF 2.21, triton 3.7.1). Loading it first is
# safe, and the suite imports both (seqio -> TensorFlow, the parity tests -> transformers).
try:
  import triton  # noqa: F401,E402  pylint: disable=unused-import
except ImportError:
  pass

import jax  # noqa: E402

jax.config.update("jax_num_cpu_devices", 8)
jax.config.update("jax_compilation_cache_dir", os.environ["JAX_COMPILATION_CACHE_DIR"])
jax.config.update("jax_persistent_cache_min_compile_time_secs",
                  float(os.environ["JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS"]))

import pytest  # noqa: E402

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def pytest_collection_modifyitems(config, items):
  backend = jax.default_backend()
  for item in items:
    if "gpu" in item.keywords and backend != "gpu":
      item.add_marker(pytest.mark.skip(reason="needs a GPU"))
    if "tpu" in item.keywords and backend != "tpu":
      item.add_marker(pytest.mark.skip(reason="needs a TPU"))


@pytest.fixture(autouse=True)
def _clear_gin():
  import gin  # pylint: disable=import-outside-toplevel
  gin.clear_config()
  yield
  gin.clear_config()


@pytest.fixture
def repo_root():
  return REPO_ROOT
