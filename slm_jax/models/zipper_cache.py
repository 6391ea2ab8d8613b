"""The Zipper's generation cache: each tower's self-attention keys plus its cross-attention keys.

Slot p of a row holds unified position p, as in the shared model's cache (models/kv_cache.py).
The streams are disjoint, so a slot holds a key of one tower only: when the towers' keys have one
shape (kv heads, head dim; `one_layout`) both towers share each array, slot p holding the key of
tower(p) (self-attention) or of the cross-attention that reads tower(p)'s state (the other
tower's): half the memory, one array read per layer, and what lets a paired step
(models/zipper.py, `paired_block`) attend both towers with one attention. Otherwise each tower has
its own arrays (the slots of the other tower's positions unused):

    stacks[name]     StackCache [Y, B, G, S, E]  self-attention keys / values of layer y; name
                                                 `towers` (shared: text layer y at text slots,
                                                 speech layer y at speech slots) or per tower
    cross[name]      CrossCache [Y, B, S, G, E]  cross-attention keys / values projected from the
                                                 hidden states at slot p (read as they are by the
                                                 attention dispatch, [B, S, G, E]); `towers`
                                                 (shared: the text tower's y-th cross-attention at
                                                 speech slots, the speech tower's y-th at text
                                                 slots) or per tower
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
SHARED = "towers"      # the key of the arrays both towers share


@flax.struct.dataclass
class CrossCache:
  k_YBSGE: jax.Array
  v_YBSGE: jax.Array


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

  @property
  def shared(self) -> bool:
    """Both towers' keys share the arrays (`one_layout`)."""
    return SHARED in self.stacks

  def stack(self, tower: str) -> StackCache:
    """The self-attention keys tower `tower` reads (layer y: its layer y at its own slots)."""
    return self.stacks[SHARED if self.shared else tower]

  def cross_of(self, tower: str) -> CrossCache:
    """The keys of tower `tower`'s cross-attentions (its c-th at the other tower's slots of c)."""
    return self.cross[SHARED if self.shared else tower]

  def nbytes(self) -> int:
    return sum(x.size * x.dtype.itemsize for x in jax.tree.leaves(self))


def num_cross(cfg, tower: str) -> int:
  t = cfg.zipper_text if tower == "text" else cfg.zipper_speech
  return t.num_layers // t.cross_every if t.cross_every else 0


def one_layout(cfg) -> bool:
  """The towers' keys have one shape (kv heads, head dim), so the cache arrays are shared."""
  tc, sc = cfg.tower("text"), cfg.tower("speech")
  return (tc.num_kv_heads, tc.head_dim) == (sc.num_kv_heads, sc.head_dim)


def init_zipper_cache(cfg, batch_size: int, max_length: int, dtype=None) -> ZipperCache:
  """An empty cache for `batch_size` rows of `max_length` slots (dtype: the compute dtype)."""
  dtype = dtype or cfg.jnp_dtype
  names = (SHARED,) if one_layout(cfg) else TOWERS
  stacks, cross = {}, {}
  for name in names:
    towers = TOWERS if name == SHARED else (name,)
    tc = cfg.tower(towers[0])
    depth = max(cfg.tower(t).num_layers for t in towers)
    shape = (depth, batch_size, tc.num_kv_heads, max_length, tc.head_dim)
    stacks[name] = StackCache(constrain(jnp.zeros(shape, dtype), KV_AXES),
                              constrain(jnp.zeros(shape, dtype), KV_AXES))
    shape = (max(num_cross(cfg, t) for t in towers), batch_size, max_length, tc.num_kv_heads,
             tc.head_dim)
    cross[name] = CrossCache(constrain(jnp.zeros(shape, dtype), CROSS_AXES),
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


def write_cross_keys(cache: CrossCache, k_YBLGE, v_YBLGE, start_B) -> CrossCache:
  """Every cross-attention layer's new keys / values written at slots [start, start + L)."""
  def write(cache_YBSGE, new_YBLGE):
    new_YBLGE = new_YBLGE.astype(cache_YBSGE.dtype)
    if new_YBLGE.shape[2] == 1:   # decode: a select over the slots beats a per-row scatter on CPU
      hit_BS = jnp.arange(cache_YBSGE.shape[2])[None] == start_B[:, None]
      out = jnp.where(hit_BS[None, :, :, None, None], new_YBLGE, cache_YBSGE)
    else:
      out = jax.vmap(lambda row, new, start: jax.lax.dynamic_update_slice(row, new, (0, start, 0, 0)),
                     in_axes=(1, 1, 0), out_axes=1)(cache_YBSGE, new_YBLGE, start_B)
    return constrain(out, CROSS_AXES)
  return CrossCache(write(cache.k_YBSGE, k_YBLGE), write(cache.v_YBSGE, v_YBLGE))
