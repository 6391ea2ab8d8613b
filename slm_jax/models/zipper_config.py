"""Zipper tower shapes: one `TowerConfig` per modality (docs/architecture.md, "Zipper").

    ModelConfig.architecture = 'zipper'
    ModelConfig.zipper_text = @text/TowerConfig()
    ModelConfig.zipper_speech = @speech/TowerConfig()
    text/TowerConfig.num_layers = 4
    speech/TowerConfig.cross_every = 2

A NamedTuple (not a dataclass) so that `model_config.json` of an export stores it as a list and
`ModelConfig` rebuilds it on load.
"""
from __future__ import annotations

from typing import NamedTuple

import gin

TOWERS = ("text", "speech")

# Parameter-path patterns of each tower's own parameters: its backbone and input MLP. The tower's
# cross-attentions into the other tower are not included (they are what fusion trains), so a
# frozen text tower still learns to read speech.
TOWER_PATTERNS = {"text": ("^text/", "^text_input/"), "speech": ("^speech/", "^speech_input/")}


def tower_patterns(towers) -> tuple[str, ...]:
  """The parameter-path patterns of the named towers ("text", "speech")."""
  unknown = [t for t in towers if t not in TOWER_PATTERNS]
  if unknown:
    from slm_jax.configuration import ConfigError  # pylint: disable=import-outside-toplevel
    raise ConfigError(f"unknown Zipper tower(s) {unknown}; use {sorted(TOWER_PATTERNS)}")
  return tuple(p for t in towers for p in TOWER_PATTERNS[t])


@gin.configurable
class TowerConfig(NamedTuple):
  """One Zipper tower: a decoder over its own modality's positions of the unified stream.

  cross_every: gated cross-attention to the other tower after every k-th layer of this tower
    (0: this tower never attends the other). It reads the other tower's hidden states at the same
    relative depth.
  input_mlp: a residual MLP + ReLU on the embeddings (its output projection starts at zero, so a
    pretrained tower starts unchanged).
  """
  num_layers: int = 2
  embed_dim: int = 64
  num_heads: int = 4
  num_kv_heads: int = 2
  head_dim: int = 16
  mlp_dim: int = 128
  cross_every: int = 1
  input_mlp: bool = True


def as_tower_config(value) -> TowerConfig | None:
  """A TowerConfig from itself, a dict or a list (as `model_config.json` stores it)."""
  if value is None or isinstance(value, TowerConfig):
    return value
  if isinstance(value, dict):
    return TowerConfig(**value)
  return TowerConfig(*value)
