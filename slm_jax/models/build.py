"""Building models from a config: concrete, abstract (no memory), and from gin."""
from __future__ import annotations

import gin
import jax
from flax import nnx

from slm_jax.models.config import ModelConfig
from slm_jax.models.lm import SpeechTextLM


def build(cfg: ModelConfig, seed: int = 0) -> SpeechTextLM:
  return SpeechTextLM(cfg, rngs=nnx.Rngs(params=seed))


def build_abstract(cfg: ModelConfig) -> SpeechTextLM:
  """The model with ShapeDtypeStruct leaves: shapes and shardings, no allocation (for 1b/7b)."""
  return nnx.eval_shape(lambda: build(cfg))


def config_from_gin() -> ModelConfig:
  """The ModelConfig bound by the parsed gin files."""
  with gin.config_scope(None):
    return ModelConfig()


def param_count(model: SpeechTextLM) -> int:
  return int(sum(x.size for x in jax.tree.leaves(nnx.state(model, nnx.Param))))
