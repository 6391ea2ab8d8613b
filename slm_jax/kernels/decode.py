"""The decode step through a kernel: new queries over the KV cache plus their own new keys.

Same contract and result as `cached.attention` (one softmax over both key sets). The cache part
runs in a kernel that reads the heads-major cache as it is stored and returns its log-sum-exp:
our flash forward, or on GPU for one-token steps `pallas.ops.gpu.decode_attention.gqa` where it
fits (each row's visible slots form one contiguous range, checked on device; other rows go to ours).
The few new keys (L x L) run in XLA, and the two parts merge through their log-sum-exps.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp

from slm_jax.kernels import flash, flash_tiles as tiles
from slm_jax.kernels.reference import segment_order_mask

_GQA_BLOCK_KEYS = 128


def _new_keys_part(q_BLHE, k_new_BLGE, v_new_BLGE, q_segment_ids, q_order, scale):
  """(out [B, L, H, E] f32, lse [B, L, H, 1]) of the queries over the new keys alone."""
  b, l, h, e = q_BLHE.shape
  g = k_new_BLGE.shape[2]
  q_BLGRE = q_BLHE.reshape(b, l, g, h // g, e)
  s_BLGRM = jnp.einsum("blgre,bmge->blgrm", q_BLGRE, k_new_BLGE,
                       preferred_element_type=jnp.float32) * scale
  mask_BLM = segment_order_mask(q_segment_ids, q_order, q_segment_ids, q_order)[:, :, None, None]
  s_BLGRM = jnp.where(mask_BLM, s_BLGRM, tiles.NEG)
  m = s_BLGRM.max(-1, keepdims=True)
  p = jnp.where(mask_BLM, jnp.exp(s_BLGRM - m), 0.0)
  l_ = p.sum(-1, keepdims=True)
  out = jnp.einsum("blgrm,bmge->blgre", p.astype(v_new_BLGE.dtype), v_new_BLGE,
                   preferred_element_type=jnp.float32)
  out, lse = tiles.finish_forward(m, l_, out)
  return out.reshape(b, l, h, e), lse.reshape(b, l, h, 1)


def _merge(out1, lse1, out2, lse2, dtype):
  m = jnp.maximum(lse1, lse2)
  w1, w2 = jnp.exp(lse1 - m), jnp.exp(lse2 - m)
  seen = (lse1 > tiles.NEG) | (lse2 > tiles.NEG)
  out = (out1.astype(jnp.float32) * w1 + out2 * w2) / (w1 + w2)
  return jnp.where(seen, out, 0.0).astype(dtype)


def _gqa_fits(l: int, s: int) -> bool:
  block = min(_GQA_BLOCK_KEYS, s)
  return l == 1 and s % block == 0 and block % 16 == 0


def _gqa_part(q_BLHE, k_cache_BGSE, v_cache_BGSE, q_segment_ids, q_order, cache_segment_ids,
              cache_order, scale, interpret):
  """The cache part through the GPU decode kernel, and bool[B]: rows where it is exact."""
  from jax.experimental.pallas.ops.gpu import decode_attention  # pylint: disable=import-outside-toplevel
  b, _, h, e = q_BLHE.shape
  s = k_cache_BGSE.shape[2]
  visible = segment_order_mask(q_segment_ids, q_order, cache_segment_ids, cache_order)[:, 0]
  idx = jnp.arange(s)[None]
  start = jnp.where(visible, idx, s).min(-1)
  stop = jnp.where(visible, idx + 1, 0).max(-1)
  contiguous = visible.sum(-1) == jnp.maximum(stop - start, 0)
  block = min(_GQA_BLOCK_KEYS, s)
  acc, (l_, m) = decode_attention.gqa(
      q_BLHE[:, 0], k_cache_BGSE.swapaxes(1, 2), v_cache_BGSE.swapaxes(1, 2),
      start_idx=jnp.minimum(start, stop), kv_seq_len=stop, sm_scale=scale, block_k=block,
      k_splits=max(1, min(16, s // block)) if s % (block * min(16, s // block)) == 0 else 1,
      return_residuals=True, normalize_output=False, interpret=interpret)
  seen = (l_ > 0)[:, :, None]
  out = jnp.where(seen, acc.astype(jnp.float32) / jnp.where(seen, l_[:, :, None], 1.0), 0.0)
  lse = jnp.where(seen, (m + jnp.log(jnp.where(l_ > 0, l_, 1.0)))[:, :, None], tiles.NEG)
  return out.reshape(b, 1, h, e), lse.reshape(b, 1, h, 1), contiguous


def attention(q_BLHE, k_new_BLGE, v_new_BLGE, q_segment_ids, q_order, k_cache_BGSE, v_cache_BGSE,
              cache_segment_ids, cache_order, *, scale: float | None = None,
              use_gqa: bool | None = None, interpret: bool | None = None):
  """[B, L, H, E]; the arguments of `cached.attention`. `use_gqa` (default: on GPU) lets one-token
  steps use the GPU decode kernel where it fits."""
  b, l, h, e = q_BLHE.shape
  s = k_cache_BGSE.shape[2]
  scale = e ** -0.5 if scale is None else scale
  dtype = q_BLHE.dtype
  k_cache_BGSE, v_cache_BGSE = k_cache_BGSE.astype(dtype), v_cache_BGSE.astype(dtype)
  use_gqa = jax.default_backend() == "gpu" if use_gqa is None else use_gqa
  masks = (q_segment_ids, q_order, cache_segment_ids, cache_order)

  def ours():
    return flash.forward_heads_major(q_BLHE, k_cache_BGSE, v_cache_BGSE, *masks, scale=scale,
                                     interpret=interpret)

  if use_gqa and _gqa_fits(l, s):
    interp = jax.default_backend() != "gpu" if interpret is None else interpret
    out1, lse1, fits = _gqa_part(q_BLHE, k_cache_BGSE, v_cache_BGSE, *masks, scale, interp)
    out1, lse1 = jax.lax.cond(jnp.all(fits), lambda: (out1.astype(dtype), lse1), ours)
  else:
    out1, lse1 = ours()
  out2, lse2 = _new_keys_part(q_BLHE, k_new_BLGE, v_new_BLGE, q_segment_ids, q_order, scale)
  return _merge(out1, lse1, out2, lse2, dtype)
