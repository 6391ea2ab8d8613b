"""Optimizer: AdamW with a warmup + decay schedule, global-norm clipping, a weight-decay mask and
frozen parameter groups (selected by regular expressions on the parameter path, see
`param_paths`).
"""
from __future__ import annotations

import dataclasses
import re
from typing import Sequence

import gin
import jax
import optax

from slm_jax.configuration import ConfigError
from slm_jax.models.zipper_config import tower_patterns
from slm_jax.train.param_paths import param_path

DECAY_KINDS = ("cosine", "linear", "constant")


@gin.configurable
def learning_rate_schedule(peak_learning_rate: float = 3e-4, warmup_steps: int = 100,
                           decay_steps: int = 10_000, decay: str = "cosine",
                           end_ratio: float = 0.1) -> optax.Schedule:
  """Linear warmup from 0 to `peak_learning_rate`, then cosine / linear decay or constant.

  Args:
    decay_steps: steps of the decay phase after warmup (the lr stays at its end value afterwards).
    end_ratio: final lr as a fraction of the peak (cosine / linear).
  """
  if decay not in DECAY_KINDS:
    raise ConfigError(f"learning_rate_schedule.decay={decay!r}; use one of {DECAY_KINDS}")
  warmup = optax.linear_schedule(0.0, peak_learning_rate, max(warmup_steps, 1))
  end = peak_learning_rate * end_ratio
  if decay == "cosine":
    after = optax.cosine_decay_schedule(peak_learning_rate, max(decay_steps, 1), alpha=end_ratio)
  elif decay == "linear":
    after = optax.linear_schedule(peak_learning_rate, end, max(decay_steps, 1))
  else:
    after = optax.constant_schedule(peak_learning_rate)
  if warmup_steps <= 0:
    return after
  return optax.join_schedules([warmup, after], [warmup_steps])


def path_mask(params, patterns: Sequence[str]):
  """A bool tree: True where the leaf's path matches any of the regular expressions."""
  compiled = [re.compile(p) for p in patterns]
  return jax.tree_util.tree_map_with_path(
      lambda path, _: any(c.search(param_path(path)) for c in compiled), params)


def check_patterns_match(params, patterns: Sequence[str], what: str) -> None:
  paths = [param_path(p) for p, _ in jax.tree_util.tree_flatten_with_path(params)[0]]
  for pattern in patterns:
    if not any(re.search(pattern, p) for p in paths):
      raise ConfigError(f"{what} pattern {pattern!r} matches no parameter; parameter paths are e.g. "
                       f"{paths[:6]}")


@gin.configurable
@dataclasses.dataclass(frozen=True)
class OptimizerOptions:
  """Optimizer hyper-parameters bound from gin (`OptimizerOptions.weight_decay = 0.01`, ...).

  Attributes:
    clip_norm: global gradient-norm clipping threshold (None: no clipping).
    no_decay_patterns: regexes on parameter paths that get no weight decay: norm scales, biases
      and every embedding table (text, speech channel-0 and the per-channel speech tables);
      projection kernels, the output heads included, are decayed.
    freeze_patterns: regexes on parameter paths that are frozen: bit-identical, no optimizer state
      (e.g. `("^decoder/",)` trains only the towers and heads).
    freeze_towers: Zipper towers to freeze ("text", "speech"): their backbone and input MLP
      (models/zipper_config.py's TOWER_PATTERNS), added to `freeze_patterns`.
  """
  b1: float = 0.9
  b2: float = 0.95
  eps: float = 1e-8
  weight_decay: float = 0.1
  clip_norm: float | None = 1.0
  no_decay_patterns: tuple[str, ...] = ("norm", "bias", "embed", "table")
  freeze_patterns: tuple[str, ...] = ()
  freeze_towers: tuple[str, ...] = ()

  def __post_init__(self):
    # gin binds lists; keep tuples so options stay hashable and immutable.
    object.__setattr__(self, "no_decay_patterns", tuple(self.no_decay_patterns))
    object.__setattr__(self, "freeze_towers", tuple(self.freeze_towers))
    object.__setattr__(self, "freeze_patterns", tuple(self.freeze_patterns) + tuple(
        p for p in tower_patterns(self.freeze_towers) if p not in self.freeze_patterns))
    if not (0 <= self.b1 < 1 and 0 <= self.b2 < 1):
      raise ConfigError(f"OptimizerOptions: b1={self.b1}, b2={self.b2} must be in [0, 1)")
    if self.eps <= 0 or self.weight_decay < 0:
      raise ConfigError(f"OptimizerOptions: eps={self.eps} must be > 0 and "
                        f"weight_decay={self.weight_decay} >= 0")
    if self.clip_norm is not None and self.clip_norm <= 0:
      raise ConfigError(f"OptimizerOptions.clip_norm={self.clip_norm} must be > 0 (None: no clipping)")
    for pattern in self.no_decay_patterns + self.freeze_patterns:
      try:
        re.compile(pattern)
      except re.error as e:
        raise ConfigError(f"OptimizerOptions: pattern {pattern!r} is not a regular expression: {e}") from None


def trainable_mask(params, freeze_patterns: Sequence[str]):
  """True for parameters that train, False for frozen ones."""
  if freeze_patterns:
    check_patterns_match(params, freeze_patterns, "freeze")
  return jax.tree.map(lambda f: not f, path_mask(params, freeze_patterns))


def make_optimizer(params, schedule: optax.Schedule, options: OptimizerOptions
                   ) -> optax.GradientTransformation:
  """AdamW (+ clipping) on trainable parameters; frozen ones get zero updates and no state."""
  o = options
  def decay_mask(p):  # p may hold optax.MaskedNode at frozen leaves; only real leaves are mapped
    return jax.tree.map(lambda m: not m, path_mask(p, o.no_decay_patterns))

  adamw = optax.adamw(schedule, b1=o.b1, b2=o.b2, eps=o.eps, weight_decay=o.weight_decay,
                      mask=decay_mask)
  train = optax.chain(optax.clip_by_global_norm(o.clip_norm), adamw) if o.clip_norm else adamw
  labels = jax.tree.map(lambda t: "train" if t else "frozen",
                        trainable_mask(params, o.freeze_patterns))
  return optax.multi_transform({"train": train, "frozen": optax.set_to_zero()}, labels)
