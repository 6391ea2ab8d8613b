"""The package installs as a user gets it: a wheel (`pip install .`) and an editable install.

Each goes into a fresh virtual environment that borrows this test environment's dependencies
(a .pth line naming its site-packages), so nothing is downloaded. The checks run from a scratch
working directory, away from the repository: `slm-train` starts, the gin files are found inside
the installed package, and the top-level tasks/ folder imports as `slm_jax.tasks`.
"""
import json
import os
import shutil
import subprocess
import sys
import sysconfig

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PACKAGED_DIRS = ("slm_jax", "tasks", "configs")
TINY = ["TOTAL_STEPS=2", "ModelConfig.num_layers=1", "ModelConfig.embed_dim=32",
        "ModelConfig.mlp_dim=64", "ModelConfig.head_dim=8", "SEQ_LEN=32", "train.eval_every=0",
        "peak_flops.override_per_device=1e11"]   # no measuring of the host's matmul peak
WHERE = """
import importlib.metadata, json, slm_jax, slm_jax.tasks, slm_jax.configuration as c
scripts = [ep for ep in importlib.metadata.distribution("slm_jax").entry_points
           if ep.group == "console_scripts"]
print(json.dumps({"slm_jax": slm_jax.__file__, "tasks": slm_jax.tasks.__file__,
                  "configs": c.CONFIGS_DIR, "gin_files": c.available_configs(),
                  "scripts": {ep.name: callable(ep.load()) for ep in scripts}}))
"""


def _copy_source(dst):
  """The files a build reads: top-level files and the packaged folders, without build debris."""
  os.makedirs(dst)
  for name in os.listdir(REPO):
    path = os.path.join(REPO, name)
    if os.path.isfile(path):
      shutil.copy2(path, dst)
  for name in PACKAGED_DIRS:
    shutil.copytree(os.path.join(REPO, name), os.path.join(dst, name),
                    ignore=shutil.ignore_patterns("__pycache__", "*.pyc", "*.tmp", "*.egg-info"))
  return dst


def _env(**extra):
  env = dict(os.environ, JAX_PLATFORMS="cpu", TF_CPP_MIN_LOG_LEVEL="3", PIP_NO_INDEX="1",
             PIP_DISABLE_PIP_VERSION_CHECK="1", **extra)
  env.pop("PYTHONPATH", None)
  return env


def _check(cmd, cwd, timeout=600):
  proc = subprocess.run(cmd, cwd=cwd, env=_env(), capture_output=True, text=True, timeout=timeout)
  assert proc.returncode == 0, f"{cmd}\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
  return proc.stdout


def _venv(path):
  """A venv without pip of its own that sees this environment's packages after its own."""
  subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(path)], check=True)
  python = os.path.join(path, "bin", "python")
  site = subprocess.run([python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                        check=True, capture_output=True, text=True).stdout.strip()
  parents = {sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]}
  with open(os.path.join(site, "_test_environment.pth"), "w") as f:
    f.write("\n".join(sorted(parents)) + "\n")
  return python, site


def _pip_install(python, *args):
  # --ignore-installed: never touch the slm_jax this test environment itself has installed.
  _check([python, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation",
          "--ignore-installed", *args], cwd=os.path.dirname(python))


def _where(python, cwd):
  return json.loads(_check([python, "-c", WHERE], cwd).strip().splitlines()[-1])


@pytest.mark.slow
def test_wheel_installs_and_trains_from_any_directory(tmp_path):
  src = _copy_source(tmp_path / "src")
  _check([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation",
          "-w", str(tmp_path / "dist"), str(src)], cwd=tmp_path)
  wheels = os.listdir(tmp_path / "dist")
  assert len(wheels) == 1 and wheels[0].endswith(".whl"), wheels
  python, site = _venv(tmp_path / "venv")
  _pip_install(python, str(tmp_path / "dist" / wheels[0]))
  shutil.rmtree(src)  # nothing may come from the source tree any more

  cwd = tmp_path / "elsewhere"
  cwd.mkdir()
  where = _where(python, cwd)
  assert where["slm_jax"].startswith(site) and where["tasks"].startswith(site), where
  assert where["configs"] == os.path.join(site, "slm_jax", "configs"), where
  assert {"runs/demo_synthetic.gin", "models/tiny.gin", "mesh/fsdp.gin"} <= set(where["gin_files"])
  assert {"slm-train", "slm-data", "slm-export", "slm-generate"} <= set(where["scripts"]), where["scripts"]
  assert all(where["scripts"].values()), where["scripts"]  # every entry point imports

  slm_train = os.path.join(os.path.dirname(python), "slm-train")
  out = _check([slm_train, "--gin_file=runs/demo_synthetic.gin", "--workdir=run", "--no_progress"]
               + [f"--gin_param={p}" for p in TINY], cwd)
  assert "done at step 2" in out, out
  assert os.path.exists(cwd / "run" / "checkpoints" / "2")
  for script in where["scripts"]:
    assert os.path.exists(os.path.join(os.path.dirname(python), script)), script


@pytest.mark.slow
def test_editable_install_resolves_the_same_way(tmp_path):
  src = _copy_source(tmp_path / "src")
  python, _ = _venv(tmp_path / "venv")
  _pip_install(python, "-e", str(src))
  cwd = tmp_path / "elsewhere"
  cwd.mkdir()
  where = _where(python, cwd)
  assert where["slm_jax"] == str(src / "slm_jax" / "__init__.py"), where
  assert where["tasks"] == str(src / "tasks" / "__init__.py"), where
  assert where["configs"] == str(src / "configs"), where
  assert "runs/demo_synthetic.gin" in where["gin_files"]
  out = _check([os.path.join(os.path.dirname(python), "slm-train"), "--help_gin"], cwd)
  assert "runs/demo_synthetic.gin" in out.split()
