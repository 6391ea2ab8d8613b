"""The attention registry: one registration adds a name ModelConfig accepts and `auto` may pick."""
import pytest

from slm_jax.configuration import ConfigError
from slm_jax.kernels import dispatch, reference
from slm_jax.models.config import ModelConfig


@pytest.fixture
def registry(monkeypatch):
  """A scratch copy of the registry, restored after the test."""
  monkeypatch.setattr(dispatch, "_IMPLEMENTATIONS", dict(dispatch._IMPLEMENTATIONS))  # pylint: disable=protected-access


def test_auto_resolves_per_backend():
  assert dispatch.resolve("auto", backend="cpu") == "xla_blockwise"
  assert dispatch.resolve("auto", backend="tpu") == "xla"     # no kernel is auto's choice before it ran on a TPU
  assert dispatch.resolve("xla", backend="cpu") == "xla"
  assert dispatch.names() == ("auto", "cudnn", "pallas", "splash", "xla", "xla_blockwise")


def test_one_registration_is_a_valid_config_name_and_an_auto_choice(registry):
  with pytest.raises(ConfigError, match="attention_impl='fancy'"):
    ModelConfig(attention_impl="fancy")
  dispatch.register("fancy", reference.attention, auto_priority={"tpu": 5, "cpu": 0})
  assert ModelConfig(attention_impl="fancy").attention_impl == "fancy"
  assert dispatch.resolve("auto", backend="tpu") == "fancy"
  assert dispatch.resolve("auto", backend="cpu") == "xla_blockwise"   # higher priority on CPU
  assert dispatch.resolve("auto", backend="gpu") == "xla"


def test_a_name_is_registered_once(registry):
  for name in ("xla", "auto"):
    with pytest.raises(ValueError, match="already taken"):
      dispatch.register(name, reference.attention)
