"""The train state: one pytree of params, optimizer state, step, RNG and NaN-guard counters.

`params` is the pure-dict form of the model's `nnx.State` (nnx.split(model, nnx.Param)[1]
.to_pure_dict()): plain nested dicts of arrays that optax, jit and Orbax all handle natively;
`nnx.merge(graphdef, params)` rebuilds the module inside the step.
"""
from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import optax
from flax import nnx, struct
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from slm_jax import sharding
from slm_jax.models import build
from slm_jax.models.config import ModelConfig
from slm_jax.train.param_paths import path_keys


@struct.dataclass
class TrainState:
  params: Any               # nested dict of arrays (param_dtype, usually float32)
  opt_state: Any            # optax state (no entries for frozen parameters)
  step: jax.Array           # int32 scalar: train steps taken (applied or skipped)
  rng: jax.Array            # uint32[2] raw PRNG key, split per step
  skipped: jax.Array        # int32 scalar: steps skipped by the NaN/Inf guard, in total
  skipped_in_row: jax.Array  # int32 scalar: consecutive skipped steps up to now

  @property
  def applied_steps(self):
    """Optimizer updates actually applied (the schedule's step)."""
    return self.step - self.skipped


def init_state(cfg: ModelConfig, optimizer: optax.GradientTransformation, seed: int) -> TrainState:
  """A fresh TrainState (call under jit with out_shardings to create it sharded)."""
  params = nnx.state(build.build(cfg, seed), nnx.Param).to_pure_dict()
  zero = jnp.zeros((), jnp.int32)
  return TrainState(params=params, opt_state=optimizer.init(params), step=zero,
                    rng=jax.random.PRNGKey(seed + 1), skipped=zero, skipped_in_row=zero)


def param_shardings(abstract_nnx_state, mesh: Mesh, rules=None):
  """Params-dict of NamedShardings from the logical axes of an abstract nnx.State."""
  return sharding.state_shardings(abstract_nnx_state, mesh, rules).to_pure_dict()


def state_shardings(abstract_train_state: TrainState, params_sh, mesh: Mesh) -> TrainState:
  """Shardings for a whole TrainState: optimizer moments follow their parameters.

  An optimizer-state leaf takes the sharding of the parameter whose key path ends its own path
  (e.g. `.../mu/decoder/.../kernel`); other leaves (step counts) are replicated.
  """
  replicated = NamedSharding(mesh, P())
  by_path = {path_keys(path): sh for path, sh in jax.tree_util.tree_flatten_with_path(params_sh)[0]}
  depth = max(len(k) for k in by_path)

  def one(path, leaf):
    keys = path_keys(path)
    for n in range(min(depth, len(keys)), 0, -1):
      sh = by_path.get(keys[-n:])
      if sh is not None and getattr(leaf, "ndim", 0) > 0:
        return sh
    return replicated

  opt_sh = jax.tree_util.tree_map_with_path(one, abstract_train_state.opt_state)
  return TrainState(params=params_sh, opt_state=opt_sh, step=replicated, rng=replicated,
                    skipped=replicated, skipped_in_row=replicated)
