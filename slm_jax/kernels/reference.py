"""XLA reference attention under the (segment, order) mask contract (docs/architecture.md).

A query attends a key when both segment ids match and are non-zero and key_order <= query_order.
Self-attention over packed rows uses `positions` as order; zipper cross-attention uses the
interleaved order of the two streams. Queries with no visible key (padding) output zeros.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp


def segment_order_mask(q_segment_ids, q_order, kv_segment_ids, kv_order, window: int | None = None):
  """bool[B, L, S]: may query l attend key s (and, with `window`, query_order - key_order < window)."""
  same = (q_segment_ids[:, :, None] == kv_segment_ids[:, None, :]) & (q_segment_ids[:, :, None] != 0)
  mask = same & (kv_order[:, None, :] <= q_order[:, :, None])
  if window is not None:
    mask = mask & (q_order[:, :, None] - kv_order[:, None, :] < window)
  return mask


def attention(q_BLHE, k_BSGE, v_BSGE, q_segment_ids, q_order, kv_segment_ids, kv_order,
              *, scale: float | None = None, softcap: float | None = None,
              window: int | None = None):
  """Grouped-query attention: H query heads share G kv heads, R = H / G query heads per kv head.

  Args:
    q_BLHE: [B, L, H, E] queries.  k_BSGE, v_BSGE: [B, S, G, E] keys / values.
    q_segment_ids, q_order: int32[B, L].  kv_segment_ids, kv_order: int32[B, S].
    softcap: logits become softcap * tanh(logits / softcap) (after the scale).
    window: a query sees keys with query_order - key_order < window only.
  Returns:
    [B, L, H, E] in the dtype of q; logits and softmax are computed in float32.
  """
  b, l, h, e = q_BLHE.shape
  g = k_BSGE.shape[2]
  if h % g:
    raise ValueError(f"{h} query heads are not a multiple of {g} kv heads")
  scale = e ** -0.5 if scale is None else scale
  q_BLGRE = q_BLHE.reshape(b, l, g, h // g, e)
  logits_BGRLS = jnp.einsum("blgre,bsge->bgrls", q_BLGRE, k_BSGE,
                            preferred_element_type=jnp.float32) * scale
  if softcap is not None:
    logits_BGRLS = softcap * jnp.tanh(logits_BGRLS / softcap)
  mask_BLS = segment_order_mask(q_segment_ids, q_order, kv_segment_ids, kv_order, window)
  logits_BGRLS = jnp.where(mask_BLS[:, None, None], logits_BGRLS, jnp.finfo(jnp.float32).min)
  probs_BGRLS = jax.nn.softmax(logits_BGRLS, axis=-1)
  # Fully masked rows (padding queries) would average all values; zero them instead.
  probs_BGRLS = jnp.where(mask_BLS.any(-1)[:, None, None, :, None], probs_BGRLS, 0.0)
  out_BLGRE = jnp.einsum("bgrls,bsge->blgre", probs_BGRLS.astype(v_BSGE.dtype), v_BSGE)
  return out_BLGRE.reshape(b, l, h, e)
