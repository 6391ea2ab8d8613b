"""Attention of new positions over a KV cache plus themselves, without writing the cache first.

Generation attends the L new queries (one token, or a prompt continued) to two key sets under the
(segment, order) contract: the S cache slots holding earlier positions, in the cache's heads-major
layout [B, G, S, E] (read as they are, never transposed or copied), and the L new keys. One
softmax spans both (a joint max and sum), so the result equals attention over the cache with the
new keys written in; the caller writes them once afterwards, outside the layer loop.
"""
from __future__ import annotations

import jax.numpy as jnp

from slm_jax.kernels.reference import segment_order_mask


def attention(q_BLHE, k_new_BLGE, v_new_BLGE, q_segment_ids, q_order, k_cache_BGSE, v_cache_BGSE,
              cache_segment_ids, cache_order, *, scale: float | None = None):
  """[B, L, H, E] outputs; cache slots not yet written must have segment id 0."""
  b, l, h, e = q_BLHE.shape
  g = k_cache_BGSE.shape[1]
  r = h // g
  scale = e ** -0.5 if scale is None else scale
  q_BGRLE = q_BLHE.reshape(b, l, g, r, e).transpose(0, 2, 3, 1, 4) * jnp.asarray(scale, q_BLHE.dtype)
  old_BGRLS = jnp.einsum("bgrle,bgse->bgrls", q_BGRLE, k_cache_BGSE.astype(q_BLHE.dtype),
                         preferred_element_type=jnp.float32)
  new_BGRLM = jnp.einsum("bgrle,bmge->bgrlm", q_BGRLE, k_new_BLGE,
                         preferred_element_type=jnp.float32)
  old_mask_BLS = segment_order_mask(q_segment_ids, q_order, cache_segment_ids, cache_order)
  new_mask_BLM = segment_order_mask(q_segment_ids, q_order, q_segment_ids, q_order)
  neg = jnp.finfo(jnp.float32).min
  old_BGRLS = jnp.where(old_mask_BLS[:, None, None], old_BGRLS, neg)
  new_BGRLM = jnp.where(new_mask_BLM[:, None, None], new_BGRLM, neg)
  max_BGRL1 = jnp.maximum(old_BGRLS.max(-1, keepdims=True), new_BGRLM.max(-1, keepdims=True))
  p_old = jnp.where(old_mask_BLS[:, None, None], jnp.exp(old_BGRLS - max_BGRL1), 0.0)
  p_new = jnp.where(new_mask_BLM[:, None, None], jnp.exp(new_BGRLM - max_BGRL1), 0.0)
  denom_BGRL1 = p_old.sum(-1, keepdims=True) + p_new.sum(-1, keepdims=True)
  v_dtype = v_new_BLGE.dtype
  out_BGRLE = (jnp.einsum("bgrls,bgse->bgrle", p_old.astype(v_dtype), v_cache_BGSE.astype(v_dtype),
                          preferred_element_type=jnp.float32)
               + jnp.einsum("bgrlm,bmge->bgrle", p_new.astype(v_dtype), v_new_BLGE,
                            preferred_element_type=jnp.float32))
  # Queries with no visible key (padding) output zeros, as in the reference.
  out_BGRLE = jnp.where(denom_BGRL1 > 0, out_BGRLE / jnp.maximum(denom_BGRL1, 1e-30), 0.0)
  return out_BGRLE.transpose(0, 3, 1, 2, 4).reshape(b, l, h, e).astype(q_BLHE.dtype)


def reference(q_BLHE, k_new_BLGE, v_new_BLGE, q_segment_ids, q_order, k_cache_BGSE, v_cache_BGSE,
              cache_segment_ids, cache_order):
  """The same by concatenating the two key sets and calling the XLA reference (for tests)."""
  from slm_jax.kernels import reference as ref  # pylint: disable=import-outside-toplevel
  k_BSGE = jnp.concatenate([k_cache_BGSE.transpose(0, 2, 1, 3).astype(k_new_BLGE.dtype), k_new_BLGE], 1)
  v_BSGE = jnp.concatenate([v_cache_BGSE.transpose(0, 2, 1, 3).astype(v_new_BLGE.dtype), v_new_BLGE], 1)
  seg = jnp.concatenate([cache_segment_ids, q_segment_ids], 1)
  order = jnp.concatenate([cache_order, q_order], 1)
  return ref.attention(q_BLHE, k_BSGE, v_BSGE, q_segment_ids, q_order, seg, order)

