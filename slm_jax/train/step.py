"""Train and eval steps: pure functions of (TrainState, batch), jit-compiled on the mesh.

The model is split once (graphdef + params dict) and merged inside the step. Gradients are
accumulated over microbatches with lax.scan; every microbatch's loss divides by denominators of the
WHOLE batch, so the accumulated gradient equals the large batch's. A step whose loss or gradients
are not finite leaves params and optimizer state untouched and is counted (NaN/Inf guard).
"""
from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp
import optax
from flax import nnx
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from slm_jax import sharding
from slm_jax.models import loss as loss_lib
from slm_jax.train.state import TrainState


def _split_microbatches(batch: dict, n: int) -> dict:
  """[B, ...] -> [n, B/n, ...]; microbatch m takes rows m, m+n, ... (spread over data shards)."""
  def one(x):
    b = x.shape[0]
    if b % n:
      raise ValueError(f"batch size {b} is not divisible by num_microbatches={n}")
    x = x.reshape((b // n, n) + x.shape[1:])
    x = jnp.swapaxes(x, 0, 1)
    axes = ("batch", "length") + (None,) * (x.ndim - 3)
    return sharding.constrain(x, (None,) + axes)
  return {k: one(v) for k, v in batch.items()}


def make_train_step(graphdef, optimizer: optax.GradientTransformation, schedule: optax.Schedule,
                    trainable, *, vocab, loss_options: loss_lib.LossOptions,
                    num_microbatches: int = 1) -> Callable:
  """Returns `step(state, batch) -> (state, metrics)` (not yet jitted; see `jit_on_mesh`).

  Args:
    trainable: params-shaped bool tree (optimizer.trainable_mask); frozen leaves are copied
      through unchanged (bit-identical).
  """
  def loss_fn(params, micro, denominators, rng):
    return loss_lib.lm_loss(nnx.merge(graphdef, params), micro, loss_options, denominators, rng)

  grad_fn = jax.value_and_grad(loss_fn, has_aux=True)

  def step(state: TrainState, batch: dict):
    denominators = loss_lib.loss_denominators(batch, vocab)
    # The step's key (state.rng, split every step, so resuming repeats it) seeds the loss's
    # randomness (LossOptions.speech_history_dropout); microbatch m folds in m.
    if num_microbatches == 1:
      (loss, sums), grads = grad_fn(state.params, batch, denominators, state.rng)
    else:
      micro = _split_microbatches(batch, num_microbatches)

      def body(carry, mb_and_index):
        mb, m = mb_and_index
        loss_acc, grads_acc, sums_acc = carry
        (l, s), g = grad_fn(state.params, mb, denominators, jax.random.fold_in(state.rng, m))
        return (loss_acc + l, jax.tree.map(jnp.add, grads_acc, g),
                jax.tree.map(jnp.add, sums_acc, s)), None

      first = jax.tree.map(lambda x: x[0], micro)
      sums_shape = jax.eval_shape(
          lambda: grad_fn(state.params, first, denominators, state.rng)[0][1])
      init = (jnp.zeros((), jnp.float32), jax.tree.map(jnp.zeros_like, state.params),
              jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), sums_shape))
      (loss, grads, sums), _ = jax.lax.scan(
          body, init, (micro, jnp.arange(num_microbatches, dtype=jnp.uint32)))

    grads = jax.tree.map(lambda g, t: g if t else jnp.zeros_like(g), grads, trainable)
    grad_norm = optax.global_norm(grads)
    finite = jnp.isfinite(loss) & jnp.isfinite(grad_norm)

    updates, new_opt = optimizer.update(grads, state.opt_state, state.params)
    new_params = optax.apply_updates(state.params, updates)
    new_params = jax.tree.map(lambda n, o, t: n if t else o, new_params, state.params, trainable)
    keep = lambda new, old: jax.tree.map(lambda n, o: jnp.where(finite, n, o), new, old)
    skipped = (~finite).astype(jnp.int32)
    new_state = state.replace(
        params=keep(new_params, state.params), opt_state=keep(new_opt, state.opt_state),
        step=state.step + 1, rng=jax.random.split(state.rng)[0],
        skipped=state.skipped + skipped,
        skipped_in_row=jnp.where(finite, 0, state.skipped_in_row + 1))
    metrics = loss_lib.metrics_from_sums(sums)
    metrics.update({
        "loss": loss, "grad_norm": grad_norm,
        "learning_rate": schedule(state.applied_steps),
        "nonfinite": skipped, "skipped_steps": new_state.skipped,
        "skipped_in_row": new_state.skipped_in_row,
    })
    return new_state, metrics

  return step


def make_eval_step(graphdef, *, loss_options: loss_lib.LossOptions) -> Callable:
  """Returns `eval_step(params, batch) -> sums` (weighted sums; add them up over batches)."""
  def eval_step(params, batch):
    return loss_lib.lm_loss(nnx.merge(graphdef, params), batch, loss_options)[1]

  return eval_step


def jit_on_mesh(fn: Callable, mesh: Mesh, rules, in_shardings, out_shardings,
                donate_argnums=()) -> Callable:
  """jit `fn` with shardings; activations are constrained by `rules` while it is traced."""
  def traced(*args):
    with sharding.activation_sharding(mesh, rules):
      return fn(*args)
  return jax.jit(traced, in_shardings=in_shardings, out_shardings=out_shardings,
                 donate_argnums=donate_argnums)


def replicated(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, P())
