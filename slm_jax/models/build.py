"""Building models from a config: concrete, abstract (no memory), and from gin."""
from __future__ import annotations

import gin
import jax
from flax import nnx

from slm_jax.models import kv_cache
from slm_jax.models.config import ModelConfig
from slm_jax.models.lm import SpeechTextLM


def build(cfg: ModelConfig, seed: int = 0) -> SpeechTextLM:
  """The model of `cfg.architecture`: the shared decoder, or Zipper (models/zipper.py)."""
  if cfg.architecture == "zipper":
    from slm_jax.models.zipper import ZipperLM  # pylint: disable=import-outside-toplevel
    return ZipperLM(cfg, rngs=nnx.Rngs(params=seed))
  return SpeechTextLM(cfg, rngs=nnx.Rngs(params=seed))


def init_cache(cfg: ModelConfig, batch_size: int, max_length: int, dtype=None):
  """The empty generation cache of `cfg.architecture`'s model."""
  if cfg.architecture == "zipper":
    from slm_jax.models.zipper_cache import init_zipper_cache  # pylint: disable=import-outside-toplevel
    return init_zipper_cache(cfg, batch_size, max_length, dtype)
  return kv_cache.init_cache(cfg, batch_size, max_length, dtype)


def cache_bytes(cfg: ModelConfig, batch_size: int, max_length: int, dtype=None) -> int:
  """Bytes `init_cache` would allocate (without allocating)."""
  shapes = jax.eval_shape(lambda: init_cache(cfg, batch_size, max_length, dtype))
  return sum(x.size * x.dtype.itemsize for x in jax.tree.leaves(shapes))


def build_abstract(cfg: ModelConfig) -> SpeechTextLM:
  """The model with ShapeDtypeStruct leaves: shapes and shardings, no allocation (for 1b/7b)."""
  return nnx.eval_shape(lambda: build(cfg))


def config_from_gin() -> ModelConfig:
  """The ModelConfig bound by the parsed gin files."""
  with gin.config_scope(None):
    return ModelConfig()


def param_count(model: SpeechTextLM) -> int:
  return int(sum(x.size for x in jax.tree.leaves(nnx.state(model, nnx.Param))))
