"""Typed options: gin binds them, bad values are ConfigErrors, known errors are SlmErrors."""
import gin
import pytest

from slm_jax import configuration
from slm_jax.configuration import ConfigError
from slm_jax.errors import SlmError
from slm_jax.models.config import ModelConfig
from slm_jax.models.loss import LossOptions
from slm_jax.models.remat import REMAT_POLICIES
from slm_jax.train import checkpoint, loop
from slm_jax.train.checkpoint import CheckpointOptions
from slm_jax.train.optimizer import OptimizerOptions
from slm_jax.train.param_paths import param_path, path_keys


@pytest.fixture(autouse=True)
def _clear_gin():
  gin.clear_config()
  yield
  gin.clear_config()


def test_gin_binds_the_options_of_a_run_file():
  configuration.parse(["models/tiny.gin", "runs/pretrain.gin"],
                      ["TOTAL_STEPS = 10", "BATCH_SIZE = 8", "SEQ_LEN = 64",
                       "OptimizerOptions.freeze_patterns = ['^decoder/']"])
  assert LossOptions().z_loss_weight == 1e-4
  assert OptimizerOptions().weight_decay == 0.1
  assert OptimizerOptions().freeze_patterns == ("^decoder/",)    # a gin list becomes a tuple
  assert CheckpointOptions() == CheckpointOptions(save_every=1000, keep_last=3, keep_every=10000)


@pytest.mark.parametrize("make, match", [
    (lambda: LossOptions(chunk_size=0), "chunk_size"),
    (lambda: LossOptions(z_loss_weight=-1.0), "loss weights"),
    (lambda: OptimizerOptions(b2=1.0), "b2"),
    (lambda: OptimizerOptions(clip_norm=-1.0), "clip_norm"),
    (lambda: OptimizerOptions(freeze_patterns=("(",)), "not a regular expression"),
    (lambda: CheckpointOptions(keep_last=0), "keep_last"),
    (lambda: CheckpointOptions(save_every=-1), "save_every"),
    (lambda: ModelConfig(remat_policy="everything"), "remat_policy"),
    (lambda: ModelConfig(dtype="float8"), "dtype"),
])
def test_bad_values_are_config_errors(make, match):
  with pytest.raises(ConfigError, match=match):
    make()


def test_every_remat_policy_in_the_table_is_a_valid_config():
  for name in REMAT_POLICIES:
    assert ModelConfig(remat_policy=name).remat_policy == name


def test_known_errors_are_slm_errors_with_their_builtin_base():
  assert issubclass(ConfigError, SlmError) and issubclass(ConfigError, ValueError)
  assert issubclass(checkpoint.CheckpointMismatchError, SlmError)
  assert issubclass(checkpoint.CheckpointMismatchError, ValueError)
  assert issubclass(loop.NonFiniteError, SlmError) and issubclass(loop.NonFiniteError, RuntimeError)


def test_parameter_paths():
  import jax  # pylint: disable=import-outside-toplevel
  tree = {"decoder": {"blocks": [{"kernel": 1}]}}
  (path, _), = jax.tree_util.tree_flatten_with_path(tree)[0]
  assert path_keys(path) == ("decoder", "blocks", "0", "kernel")
  assert param_path(path) == "decoder/blocks/0/kernel"


def test_operative_config_is_written_atomically(tmp_path):
  configuration.parse(["models/tiny.gin"])
  ModelConfig()
  path = configuration.write_operative_config(str(tmp_path / "run"))
  assert "ModelConfig.embed_dim = 64" in open(path).read()
  assert sorted(p.name for p in (tmp_path / "run").iterdir()) == ["operative_config.gin"]
