"""Blockwise XLA attention: skips key blocks that causality masks out entirely.

Same (segment, order) contract and results as `reference.attention`. When the caller passes
`causal=True` it promises that, within a segment, `order` strictly increases with the index (true
for self-attention over packed rows with `positions` as order), so a query never sees a key at a
later index. Query block i then only needs key blocks 0..i: about half the FLOPs and softmax work
of dense attention at long lengths. The (segment, order) mask is still applied exactly inside the
kept blocks, so packed documents and padding behave as in the reference. Without the promise (e.g.
zipper cross-attention) it computes dense attention.
"""
from __future__ import annotations

import gin
import jax
import jax.numpy as jnp

from slm_jax.kernels.reference import segment_order_mask


def _dense(q_BLGRE, k_BSGE, v_BSGE, mask_BLS, scale):
  """Masked softmax attention for one query slab against a key prefix -> [B, L, G, R, E].

  Heads-major operands ([B, G, R, L, E] x [B, G, S, E]) with the scale folded into q: XLA:CPU
  runs these faster than the reference's layout.
  """
  q_BGRLE = jnp.einsum("blgre->bgrle", q_BLGRE * scale)
  k_BGSE, v_BGSE = jnp.einsum("bsge->bgse", k_BSGE), jnp.einsum("bsge->bgse", v_BSGE)
  logits_BGRLS = jnp.einsum("bgrle,bgse->bgrls", q_BGRLE, k_BGSE,
                            preferred_element_type=jnp.float32)
  logits_BGRLS = jnp.where(mask_BLS[:, None, None], logits_BGRLS, jnp.finfo(jnp.float32).min)
  probs_BGRLS = jax.nn.softmax(logits_BGRLS, axis=-1)
  out_BGRLE = jnp.einsum("bgrls,bgse->bgrle", probs_BGRLS.astype(v_BSGE.dtype), v_BGSE)
  # Queries with no visible key (padding) output zeros: masking the [B, L, G, R, E] output is
  # cheaper than masking the [B, G, R, L, S] probabilities, with the same values and gradients.
  return jnp.where(mask_BLS.any(-1)[:, :, None, None, None],
                   jnp.einsum("bgrle->blgre", out_BGRLE), 0)


@gin.configurable("blockwise_attention", denylist=["scale", "causal"])
def attention(q_BLHE, k_BSGE, v_BSGE, q_segment_ids, q_order, kv_segment_ids, kv_order,
              *, scale: float | None = None, causal: bool = False, block_size: int = 128):
  """Grouped-query attention; with `causal`, query block i attends key blocks 0..i only.

  Args: as `reference.attention`, plus
    causal: the caller's promise that order strictly increases with index within a segment.
    block_size: query/key block length (gin: `blockwise_attention.block_size`); lengths that
      it does not divide fall back to dense attention.
  """
  b, l, h, e = q_BLHE.shape
  s, g = k_BSGE.shape[1], k_BSGE.shape[2]
  if h % g:
    raise ValueError(f"{h} query heads are not a multiple of {g} kv heads")
  scale = e ** -0.5 if scale is None else scale
  q_BLGRE = q_BLHE.reshape(b, l, g, h // g, e)
  if not causal or l != s or l % block_size or l <= block_size:
    mask_BLS = segment_order_mask(q_segment_ids, q_order, kv_segment_ids, kv_order)
    return _dense(q_BLGRE, k_BSGE, v_BSGE, mask_BLS, scale).reshape(b, l, h, e)
  outs = []
  for start in range(0, l, block_size):
    stop = start + block_size          # keys [0, stop): every later key block is masked
    mask_BLS = segment_order_mask(q_segment_ids[:, start:stop], q_order[:, start:stop],
                                  kv_segment_ids[:, :stop], kv_order[:, :stop])
    outs.append(_dense(q_BLGRE[:, start:stop], k_BSGE[:, :stop], v_BSGE[:, :stop], mask_BLS, scale))
  return jnp.concatenate(outs, axis=1).reshape(b, l, h, e)
