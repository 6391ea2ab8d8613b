"""XLA reference attention under the (segment, order) mask contract (DESIGN.md).

A query attends a key when both segment ids match and are non-zero and key_order <= query_order.
Self-attention over packed rows uses `positions` as order; zipper cross-attention uses the
interleaved order of the two streams. Queries with no visible key (padding) output zeros.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp


def segment_order_mask(q_segment_ids, q_order, kv_segment_ids, kv_order):
  """bool[B, L, S]: may query l attend key s."""
  same = (q_segment_ids[:, :, None] == kv_segment_ids[:, None, :]) & (q_segment_ids[:, :, None] != 0)
  return same & (kv_order[:, None, :] <= q_order[:, :, None])


def attention(q_BLHD, k_BSKD, v_BSKD, q_segment_ids, q_order, kv_segment_ids, kv_order,
              *, scale: float | None = None):
  """Grouped-query attention: H query heads share K = H / G kv heads.

  Args:
    q_BLHD: [B, L, H, D] queries.  k_BSKD, v_BSKD: [B, S, K, D] keys / values.
    q_segment_ids, q_order: int32[B, L].  kv_segment_ids, kv_order: int32[B, S].
  Returns:
    [B, L, H, D] in the dtype of q; logits and softmax are computed in float32.
  """
  b, l, h, d = q_BLHD.shape
  kv_heads = k_BSKD.shape[2]
  if h % kv_heads:
    raise ValueError(f"{h} query heads are not a multiple of {kv_heads} kv heads")
  scale = d ** -0.5 if scale is None else scale
  q_BLKGD = q_BLHD.reshape(b, l, kv_heads, h // kv_heads, d)
  logits_BKGLS = jnp.einsum("blkgd,bskd->bkgls", q_BLKGD, k_BSKD,
                            preferred_element_type=jnp.float32) * scale
  mask_BLS = segment_order_mask(q_segment_ids, q_order, kv_segment_ids, kv_order)
  logits_BKGLS = jnp.where(mask_BLS[:, None, None], logits_BKGLS, jnp.finfo(jnp.float32).min)
  probs_BKGLS = jax.nn.softmax(logits_BKGLS, axis=-1)
  # Fully masked rows (padding queries) would average all values; zero them instead.
  probs_BKGLS = jnp.where(mask_BLS.any(-1)[:, None, None, :, None], probs_BKGLS, 0.0)
  out_BLKGD = jnp.einsum("bkgls,bskd->blkgd", probs_BKGLS.astype(v_BSKD.dtype), v_BSKD)
  return out_BLKGD.reshape(b, l, h, d)
