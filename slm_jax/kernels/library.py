"""Library attention kernels where the case is theirs: TPU splash attention and cuDNN.

Each takes the signature of `reference.attention` and raises `KernelUnsupportedError` (one clear
line) for a case it does not cover, instead of computing something else.

- `splash`: packed causal self-attention (the causal promise, L == S). Under the promise the
  (segment, order) mask is the index-causal mask within equal segment ids, which is splash's
  `CausalMask` + `SegmentIds`. Padding queries get a segment id no key has, and padding rows are
  zeroed afterwards (splash would average the values of a fully masked row).
- `cudnn`: `jax.nn.dot_product_attention`, which knows padding lengths but no segments: rows must be
  one document from index 0 (orders = index) followed by padding. Concrete inputs are checked and
  refused; under `jit` the check runs on device and rows outside the case go to our kernel.
"""
from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

from slm_jax.kernels import flash, flash_tiles as tiles
from slm_jax.kernels.flash import KernelUnsupportedError

_SPLASH_BLOCK = 128


@functools.lru_cache(maxsize=32)
def _splash_kernel(num_heads: int, length: int, block: int, softcap, interpret: bool):
  from jax.experimental.pallas.ops.tpu.splash_attention import (  # pylint: disable=import-outside-toplevel
      splash_attention_kernel as splash, splash_attention_mask as masks)
  causal = masks.MultiHeadMask([masks.CausalMask((length, length))] * num_heads)
  sizes = splash.BlockSizes(block_q=block, block_kv=block, block_kv_compute=block,
                            block_q_dkv=block, block_kv_dkv=block, block_kv_dkv_compute=block,
                            block_q_dq=block, block_kv_dq=block)
  # A static mask (numpy block tables, `is_dynamic_mask` False), its infos made concrete even when
  # called while tracing: nothing about the mask is traced, so the kernel works under jit and can
  # be cached (masks computed at run time would need the dynamic mask infos).
  with jax.ensure_compile_time_eval():
    kernel = splash.make_splash_mha(causal, block_sizes=sizes, head_shards=1, q_seq_shards=1,
                                    attn_logits_soft_cap=softcap, interpret=interpret)
  return kernel, splash.SegmentIds


def splash_attention(q_BLHE, k_BSGE, v_BSGE, q_segment_ids, q_order, kv_segment_ids, kv_order, *,
                     scale: float | None = None, causal: bool = False, softcap: float | None = None,
                     interpret: bool | None = None):
  """Splash attention for packed causal self-attention (see the module docstring)."""
  del q_order, kv_order   # under the causal promise the order is the index within a segment
  b, l, h, e = q_BLHE.shape
  s, g = k_BSGE.shape[1], k_BSGE.shape[2]
  if not causal or l != s:
    raise KernelUnsupportedError(
        "attention 'splash' covers packed causal self-attention only (causal=True, query length "
        f"== key length; got causal={causal}, {l} vs {s}); use 'pallas' for this case")
  if h % g:
    raise KernelUnsupportedError(f"{h} query heads are not a multiple of {g} kv heads")
  interpret = jax.default_backend() != "tpu" if interpret is None else interpret
  n = tiles.round_up(l, _SPLASH_BLOCK)      # splash's key blocks are lane multiples, even interpreted
  kernel, segment_ids = _splash_kernel(h, n, _SPLASH_BLOCK, softcap, interpret)
  scale = e ** -0.5 if scale is None else scale
  q_seg = jnp.where(q_segment_ids == 0, -1, q_segment_ids)   # padding queries see no key
  q_seg = tiles.pad_axis(tiles.as_int32(q_seg), 1, n, value=-1)
  kv_seg = tiles.pad_axis(tiles.as_int32(kv_segment_ids), 1, n, value=-2)
  q_BHNE = tiles.pad_axis((q_BLHE * jnp.asarray(scale, q_BLHE.dtype)).transpose(0, 2, 1, 3), 2, n)
  k_BGNE = tiles.pad_axis(k_BSGE.transpose(0, 2, 1, 3), 2, n)
  v_BGNE = tiles.pad_axis(v_BSGE.transpose(0, 2, 1, 3), 2, n)
  out_BHNE = jax.vmap(lambda q, k, v, qs, ks: kernel(q, k, v, segment_ids=segment_ids(qs, ks)))(
      q_BHNE, k_BGNE, v_BGNE, q_seg, kv_seg)
  out_BLHE = out_BHNE[:, :, :l].transpose(0, 2, 1, 3)
  return jnp.where((q_segment_ids != 0)[:, :, None, None], out_BLHE, 0).astype(q_BLHE.dtype)


def _one_document_rows(q_segment_ids, q_order, kv_segment_ids, kv_order):
  """bool[B]: the row is one document (segment 1) from index 0 with orders = index, then padding;
  and lengths [B] of its queries and keys."""
  def check(seg, order):
    length = (seg != 0).sum(-1)
    idx = jnp.arange(seg.shape[1])[None]
    inside = idx < length[:, None]
    ok = jnp.all(jnp.where(inside, (seg == 1) & (order == idx), seg == 0), axis=-1)
    return ok, length
  q_ok, q_len = check(q_segment_ids, q_order)
  k_ok, k_len = check(kv_segment_ids, kv_order)
  return q_ok & k_ok, q_len, k_len


def cudnn_attention(q_BLHE, k_BSGE, v_BSGE, q_segment_ids, q_order, kv_segment_ids, kv_order, *,
                    scale: float | None = None, causal: bool = False):
  """cuDNN attention for unpacked rows (see the module docstring)."""
  l, s = q_BLHE.shape[1], k_BSGE.shape[1]
  if not causal or l != s:
    raise KernelUnsupportedError(
        "attention 'cudnn' covers causal self-attention over unpacked rows only; use 'pallas'")
  fits, q_len, k_len = _one_document_rows(q_segment_ids, q_order, kv_segment_ids, kv_order)
  if not isinstance(fits, jax.core.Tracer) and not bool(np.all(fits)):
    raise KernelUnsupportedError(
        "attention 'cudnn' needs rows of one document from index 0 then padding (no packed "
        "segments); use 'pallas' or 'splash' for packed rows")
  impl = "cudnn" if jax.default_backend() == "gpu" else None   # XLA's path elsewhere (tests)

  def library(q, k, v):
    out = jax.nn.dot_product_attention(q, k, v, scale=scale, is_causal=True,
                                       query_seq_lengths=q_len, key_value_seq_lengths=k_len,
                                       implementation=impl)
    return jnp.where((q_segment_ids != 0)[:, :, None, None], out, 0).astype(q.dtype)

  def ours(q, k, v):
    return flash.attention(q, k, v, q_segment_ids, q_order, kv_segment_ids, kv_order, scale=scale,
                           causal=True)

  if not isinstance(fits, jax.core.Tracer):
    return library(q_BLHE, k_BSGE, v_BSGE)
  return jax.lax.cond(jnp.all(fits), library, ours, q_BLHE, k_BSGE, v_BSGE)
