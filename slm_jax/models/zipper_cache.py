"""The Zipper's generation cache: each tower's own KV cache plus its cross-attention keys.

Slot p of a row holds unified position p, as in the shared model's cache (models/kv_cache.py):

    stacks[t]        StackCache [Y_t, B, G_t, S, E_t]  tower t's self-attention keys / values
    cross[t]         CrossCache [X_t, B, S, G_t, E_t]  tower t's X_t cross-attentions: keys /
                                                       values projected from the other tower's
                                                       hidden states at slot p (read as they are
                                                       by the attention dispatch, [B, S, G, E])
    segment_ids_BS   int32 [B, S]  1 where a slot is written, 0 = empty
    order_BS         int32 [B, S]  the unified position (the cross-attention order)
    speech_BS        bool  [B, S]  the slot belongs to the speech tower
    stream_BS        int32 [B, S]  its position within its tower's stream (the self-attention order)

A tower's self-attention sees the slots of its own tower, its cross-attentions the other tower's.
"""
from __future__ import annotations

import flax.struct
import jax
import jax.numpy as jnp

from slm_jax.models.kv_cache import KV_AXES, SLOT_AXES, StackCache, write_rows
from slm_jax.models.zipper_config import TOWERS
from slm_jax.sharding import constrain

CROSS_AXES = ("layers", "batch", "length", "act_kv_heads", None)


@flax.struct.dataclass
class CrossCache:
  k_XBSGE: jax.Array
  v_XBSGE: jax.Array


@flax.struct.dataclass
class ZipperCache:
  stacks: dict[str, StackCache]
  cross: dict[str, CrossCache]
  segment_ids_BS: jax.Array
  order_BS: jax.Array
  speech_BS: jax.Array
  stream_BS: jax.Array

  @property
  def max_length(self) -> int:
    return self.segment_ids_BS.shape[1]

  @property
  def batch_size(self) -> int:
    return self.segment_ids_BS.shape[0]

  def nbytes(self) -> int:
    return sum(x.size * x.dtype.itemsize for x in jax.tree.leaves(self))


def num_cross(cfg, tower: str) -> int:
  t = cfg.zipper_text if tower == "text" else cfg.zipper_speech
  return t.num_layers // t.cross_every if t.cross_every else 0


def init_zipper_cache(cfg, batch_size: int, max_length: int, dtype=None) -> ZipperCache:
  """An empty cache for `batch_size` rows of `max_length` slots (dtype: the compute dtype)."""
  dtype = dtype or cfg.jnp_dtype
  stacks, cross = {}, {}
  for t in TOWERS:
    tc = cfg.tower(t)
    shape = (tc.num_layers, batch_size, tc.num_kv_heads, max_length, tc.head_dim)
    stacks[t] = StackCache(constrain(jnp.zeros(shape, dtype), KV_AXES),
                           constrain(jnp.zeros(shape, dtype), KV_AXES))
    shape = (num_cross(cfg, t), batch_size, max_length, tc.num_kv_heads, tc.head_dim)
    cross[t] = CrossCache(constrain(jnp.zeros(shape, dtype), CROSS_AXES),
                          constrain(jnp.zeros(shape, dtype), CROSS_AXES))
  slots = lambda dtype: constrain(jnp.zeros((batch_size, max_length), dtype), SLOT_AXES)  # noqa: E731
  return ZipperCache(stacks, cross, slots(jnp.int32), slots(jnp.int32), slots(bool),
                     slots(jnp.int32))


def write_zipper_slots(cache: ZipperCache, segment_ids_BL, positions_BL, speech_BL,
                       stream_BL) -> ZipperCache:
  """The cache with the new positions' slot metadata written (keys and values come per layer)."""
  start_B = positions_BL[:, 0]

  def write(cache_BS, new_BL):
    return constrain(write_rows(cache_BS, new_BL, start_B), SLOT_AXES)
  return cache.replace(segment_ids_BS=write(cache.segment_ids_BS, segment_ids_BL),
                       order_BS=write(cache.order_BS, positions_BL),
                       speech_BS=write(cache.speech_BS, speech_BL),
                       stream_BS=write(cache.stream_BS, stream_BL))
