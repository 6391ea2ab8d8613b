"""The key/value cache the decoder reads and writes during generation.

Keys and values are stacked like the scanned decoder's parameters, one pair per block stack
(the shared decoder and, when configured, the text and speech towers' own layers), heads-major so
that attention reads them as they are:

    k_YBGSE, v_YBGSE   [layers, batch, kv_heads, S_max, head_dim]

Beside them, per cache slot, the attention contract's key side (docs/architecture.md):

    segment_ids_BS   int32 [B, S_max]   1 where a slot holds a token of the row's sequence, 0 = empty
    order_BS         int32 [B, S_max]   the slot's position (the key order)
    is_speech_BS     bool  [B, S_max]   the slot holds a speech frame (towers see only their modality)

A row holds one sequence and the token at position p lives in slot p, so prefill (a whole prompt)
and decode (one token) are the same call: each layer attends its new queries to the cache slots
written before this call and to the new keys themselves (kernels/cached.py, one softmax over
both), returns its new keys, and the stack writes all layers' new keys into the cache once, after
the layer scan. Empty slots have segment 0 and are never attended. The cache carries logical axes
and shards like the activations.
"""
from __future__ import annotations

import flax.struct
import jax
import jax.numpy as jnp

from slm_jax.sharding import constrain

# Logical axes of the cache arrays (the same names the activations use).
KV_AXES = ("layers", "batch", "act_kv_heads", "length", None)
SLOT_AXES = ("batch", "length")


@flax.struct.dataclass
class StackCache:
  """Keys and values of one block stack: [Y, B, G, S, E] each."""
  k_YBGSE: jax.Array
  v_YBGSE: jax.Array


@flax.struct.dataclass
class KVCache:
  stacks: dict[str, StackCache]
  segment_ids_BS: jax.Array
  order_BS: jax.Array
  is_speech_BS: jax.Array

  @property
  def max_length(self) -> int:
    return self.segment_ids_BS.shape[1]

  @property
  def batch_size(self) -> int:
    return self.segment_ids_BS.shape[0]

  def nbytes(self) -> int:
    return sum(x.size * x.dtype.itemsize for x in jax.tree.leaves(self))


def stack_names(cfg) -> dict[str, int]:
  """Block stacks of a model config that need a cache, with their depth."""
  out = {"decoder": cfg.num_layers}
  if cfg.text_tower_layers:
    out["text_tower"] = cfg.text_tower_layers
  if cfg.speech_tower_layers:
    out["speech_tower"] = cfg.speech_tower_layers
  return out


def init_cache(cfg, batch_size: int, max_length: int, dtype=None) -> KVCache:
  """An empty cache for `batch_size` rows of `max_length` slots (dtype: the compute dtype)."""
  dtype = dtype or cfg.jnp_dtype
  stacks = {}
  for name, depth in stack_names(cfg).items():
    shape = (depth, batch_size, cfg.num_kv_heads, max_length, cfg.head_dim)
    stacks[name] = StackCache(constrain(jnp.zeros(shape, dtype), KV_AXES),
                              constrain(jnp.zeros(shape, dtype), KV_AXES))
  slots = lambda dtype: constrain(jnp.zeros((batch_size, max_length), dtype), SLOT_AXES)  # noqa: E731
  return KVCache(stacks, slots(jnp.int32), slots(jnp.int32), slots(bool))


def cache_bytes(cfg, batch_size: int, max_length: int, dtype=None) -> int:
  """Bytes `init_cache` would allocate (without allocating)."""
  shapes = jax.eval_shape(lambda: init_cache(cfg, batch_size, max_length, dtype))
  return sum(x.size * x.dtype.itemsize for x in jax.tree.leaves(shapes))


def write_rows(cache_BS, new_BL, start_B):
  """Writes new_BL[b] into cache_BS[b] at slots [start_B[b], start_B[b] + L) (trailing dims kept)."""
  def one(row, new, start):
    index = (start,) + (0,) * (row.ndim - 1)
    return jax.lax.dynamic_update_slice(row, new.astype(row.dtype), index)
  return jax.vmap(one)(cache_BS, new_BL, start_B)


def write_slots(cache: KVCache, segment_ids_BL, positions_BL, is_speech_BL) -> KVCache:
  """The cache with the new positions' slot metadata written (keys and values come per layer)."""
  start_B = positions_BL[:, 0]
  return cache.replace(
      segment_ids_BS=constrain(write_rows(cache.segment_ids_BS, segment_ids_BL, start_B), SLOT_AXES),
      order_BS=constrain(write_rows(cache.order_BS, positions_BL, start_B), SLOT_AXES),
      is_speech_BS=constrain(write_rows(cache.is_speech_BS, is_speech_BL, start_B), SLOT_AXES))


@flax.struct.dataclass
class LayerView:
  """What one attention layer reads of the cache: its keys/values and the (segment, order) of the
  slots written before this call. `empty` (static): no slot is written yet (a fresh prefill), so
  the layer attends only its new keys, exactly like training."""
  k_BGSE: jax.Array
  v_BGSE: jax.Array
  segment_ids_BS: jax.Array
  order_BS: jax.Array
  empty: bool = flax.struct.field(pytree_node=False, default=False)


def write_new_keys(cache: StackCache, k_YBLGE, v_YBLGE, positions_BL) -> StackCache:
  """Every layer's new keys/values written at their positions (rows start at positions[:, 0])."""
  start_B = positions_BL[:, 0]

  def write(stacked_YBGSE, new_YBLGE):
    if new_YBLGE.shape[2] == 1:   # decode: a select over the slots beats a per-row scatter on CPU
      hit_BS = jnp.arange(stacked_YBGSE.shape[3])[None] == start_B[:, None]
      new_YBG1E = new_YBLGE.transpose(0, 1, 3, 2, 4).astype(stacked_YBGSE.dtype)
      out = jnp.where(hit_BS[None, :, None, :, None], new_YBG1E, stacked_YBGSE)
      return constrain(out, KV_AXES)
    new_BYGLE = new_YBLGE.transpose(1, 0, 3, 2, 4).astype(stacked_YBGSE.dtype)

    def one_row(row_YGSE, new_YGLE, start):
      return jax.lax.dynamic_update_slice(row_YGSE, new_YGLE, (0, 0, start, 0))
    out = jax.vmap(one_row, in_axes=(1, 0, 0), out_axes=1)(stacked_YBGSE, new_BYGLE, start_B)
    return constrain(out, KV_AXES)
  return StackCache(write(cache.k_YBGSE, k_YBLGE), write(cache.v_YBGSE, v_YBLGE))
