"""Runs an attention kernel per shard (`shard_map` over batch and heads) on the model's mesh.

A Pallas kernel is opaque to the SPMD partitioner, which would gather q/k/v onto every device to
run it. Inside `sharding.activation_sharding` (how train and eval steps trace the model) the
wrapper instead runs the kernel on each device's block of the batch and of the kv heads (with their
R query heads): attention never mixes rows or kv heads, so no communication is needed. The length
axis is not split: with a `sequence` mesh axis the keys of a row are gathered (context
parallelism is not implemented).
"""
from __future__ import annotations

import functools

import jax
from jax.sharding import PartitionSpec as P

from slm_jax import sharding


def _context():
  return sharding._CONTEXT.get()  # pylint: disable=protected-access


def on_mesh(fn):
  """fn (the signature of `reference.attention`) run under shard_map when a mesh is active."""

  @functools.wraps(fn)
  def wrapped(q_BLHE, k_BSGE, v_BSGE, q_segment_ids, q_order, kv_segment_ids, kv_order, **kw):
    args = (q_BLHE, k_BSGE, v_BSGE, q_segment_ids, q_order, kv_segment_ids, kv_order)
    ctx = _context()
    if ctx is None or ctx.mesh.size == 1:
      return fn(*args, **kw)
    # The kv-head spec decides both: a split of G kv heads splits H = G * R query heads alike.
    spec = tuple(sharding.named_sharding(ctx.mesh, ("batch", None, "act_kv_heads", None),
                                         k_BSGE.shape, ctx.rules).spec) + (None,) * 4
    batch, heads = spec[0], spec[2]
    qkv = P(batch, None, heads, None)
    ids = P(batch, None)
    return jax.shard_map(functools.partial(fn, **kw), mesh=ctx.mesh,
                         in_specs=(qkv, qkv, qkv, ids, ids, ids, ids), out_specs=qkv,
                         check_vma=False)(*args)

  return wrapped
