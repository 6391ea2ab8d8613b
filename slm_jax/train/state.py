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
from slm_jax.models.config import ModelConfig
from slm_jax.models.lm import SpeechTextLM


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


def split_model(model: SpeechTextLM):
  """(graphdef, params-dict, abstract nnx.State with logical-axis metadata)."""
  graphdef, state = nnx.split(model, nnx.Param)
  return graphdef, state.to_pure_dict(), state


def abstract_model(cfg: ModelConfig):
  """(graphdef, abstract nnx.State) without allocating parameters."""
  model = nnx.eval_shape(lambda: SpeechTextLM(cfg, rngs=nnx.Rngs(params=0)))
  graphdef, state = nnx.split(model, nnx.Param)
  return graphdef, state


def init_state(cfg: ModelConfig, optimizer: optax.GradientTransformation, seed: int) -> TrainState:
  """A fresh TrainState (call under jit with out_shardings to create it sharded)."""
  model = SpeechTextLM(cfg, rngs=nnx.Rngs(params=seed))
  _, params, _ = split_model(model)
  zero = jnp.zeros((), jnp.int32)
  return TrainState(params=params, opt_state=optimizer.init(params), step=zero,
                    rng=jax.random.PRNGKey(seed + 1), skipped=zero, skipped_in_row=zero)


def param_shardings(abstract_nnx_state, mesh: Mesh, rules=None):
  """Params-dict of NamedShardings from the logical axes of an abstract nnx.State."""
  return sharding.state_shardings(abstract_nnx_state, mesh, rules).to_pure_dict()


def state_shardings(abstract_train_state: TrainState, params_sh, optimizer, mesh: Mesh) -> TrainState:
  """Shardings for a whole TrainState: optimizer moments follow their parameters."""
  replicated = NamedSharding(mesh, P())
  opt_sh = optax.tree_map_params(
      optimizer, lambda _, s: s, abstract_train_state.opt_state, params_sh,
      transform_non_params=lambda _: replicated,
      is_leaf=lambda x: isinstance(x, NamedSharding))
  # Non-parameter leaves (counts) and MaskedNodes: replicated where they are arrays.
  opt_sh = jax.tree.map(lambda s, a: s if isinstance(s, NamedSharding) else replicated,
                        opt_sh, abstract_train_state.opt_state,
                        is_leaf=lambda x: isinstance(x, NamedSharding))
  return TrainState(params=params_sh, opt_state=opt_sh, step=replicated, rng=replicated,
                    skipped=replicated, skipped_in_row=replicated)


def with_shardings(abstract_tree, shardings_tree, dtype_of=None):
  """ShapeDtypeStructs carrying shardings (restore targets); `dtype_of(path, dtype)` may recast."""
  def one(a, s):
    return jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s)
  return jax.tree.map(one, abstract_tree, shardings_tree)
