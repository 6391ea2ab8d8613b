"""Our Pallas flash attention on the (segment, order) contract (registered as `pallas`).

`attention` has the signature of `reference.attention` plus the causal promise, an optional logit
soft-cap and sliding window. It folds the R query heads of each kv head into the rows, pads rows
and keys to whole blocks (padding gets segment id 0, so it is masked like any padding), builds the
block table and ranges in XLA (`flash_tiles`) and runs the TPU (Mosaic) or GPU (Triton) kernels,
in interpret mode on CPU. The backward is a `jax.custom_vjp`: a dq kernel and a dk/dv kernel that
recompute the probabilities from the saved log-sum-exp; the design is in docs/kernels.md.
"""
from __future__ import annotations

import dataclasses
import functools
from typing import NamedTuple

import gin
import jax
import jax.numpy as jnp

from slm_jax.errors import SlmError
from slm_jax.kernels import flash_tiles as tiles


class KernelUnsupportedError(SlmError, ValueError):
  """An attention kernel was asked for a case it does not cover."""


class Problem(NamedTuple):
  """A prepared problem: rows and keys padded to whole blocks; tables and ranges per block."""
  q: jax.Array          # [B, G, N, E]   N = L * R rows (row = l * R + r), padded
  k: jax.Array          # [B, G, S, E]   S padded
  v: jax.Array          # [B, G, S, E]
  q_seg: jax.Array      # int32[B, N]
  q_ord: jax.Array      # int32[B, N]
  k_seg: jax.Array      # int32[B, S]
  k_ord: jax.Array      # int32[B, S]
  q_table: jax.Array    # int32[B, nq, NUM_FIELDS]
  k_table: jax.Array    # int32[B, nk, NUM_FIELDS]
  k_range: jax.Array    # int32[B, nq, 2] key blocks each row block needs
  q_range: jax.Array    # int32[B, nk, 2] row blocks each key block needs


@dataclasses.dataclass(frozen=True)
class Config:
  """Static settings of one kernel call (hashable: a custom_vjp nondiff argument)."""
  scale: float
  softcap: float | None
  window: int | None
  heads_per_row: int | None   # R under the causal promise (index-based skipping), else None
  block_rows: int
  block_keys: int
  variant: str                # "mosaic" (TPU) | "triton" (GPU)
  interpret: bool


def _variant(name):
  # Imported lazily: each variant pulls in its Pallas backend module.
  if name == "mosaic":
    from slm_jax.kernels import flash_tpu as mod  # pylint: disable=import-outside-toplevel
  else:
    from slm_jax.kernels import flash_gpu as mod  # pylint: disable=import-outside-toplevel
  return mod


def _delta(out_BGNE, do_BGNE):
  return jnp.sum(out_BGNE.astype(jnp.float32) * do_BGNE.astype(jnp.float32), -1, keepdims=True)


@functools.partial(jax.custom_vjp, nondiff_argnums=(1,))
def _flash(p: Problem, cfg: Config):
  return _variant(cfg.variant).forward(p, cfg)[0]


def _flash_fwd(p, cfg):
  out, lse = _variant(cfg.variant).forward(p, cfg)
  return out, (p, out, lse)


def _flash_bwd(cfg, res, do):
  p, out, lse = res
  dq, dk, dv = _variant(cfg.variant).backward(p, cfg, do, lse, _delta(out, do))
  zeros = jax.tree.map(lambda x: None, p._replace(q=None, k=None, v=None))
  return (zeros._replace(q=dq, k=dk, v=dv),)


_flash.defvjp(_flash_fwd, _flash_bwd)


def default_variant() -> str:
  """Mosaic on TPU, Triton on GPU; on CPU (interpret mode) Triton's, whose loop visits only each
  block's range where the Mosaic grid steps through every tile."""
  return "mosaic" if jax.default_backend() == "tpu" else "triton"


def _block_sizes(variant, n, s, block_rows, block_keys, interpret):
  """Blocks no larger than the (aligned) lengths: row blocks on the sublane (8) tiling, key blocks
  on the lane (128) tiling for Mosaic; powers of two of at least 16 for Triton."""
  if variant == "triton":
    def fit(block, n):
      return min(block, max(16, 1 << (n - 1).bit_length()))
    return fit(block_rows, n), fit(block_keys, s)
  key_align = 8 if interpret else 128
  return (min(block_rows, tiles.round_up(n, 8)), min(block_keys, tiles.round_up(s, key_align)))


def prepare(q_BLHE, k_BGSE, v_BGSE, q_segment_ids, q_order, kv_segment_ids, kv_order, *,
            block_rows, block_keys, heads_per_row, window, pad_head_dim=False):
  """Folds, pads and tabulates (keys heads-major, as the KV cache holds them); returns Problem."""
  b, l, h, e = q_BLHE.shape
  g, s = k_BGSE.shape[1], k_BGSE.shape[2]
  r = h // g
  n_pad, s_pad = tiles.round_up(l * r, block_rows), tiles.round_up(s, block_keys)
  e_pad = (1 << (e - 1).bit_length()) if pad_head_dim else e
  q = q_BLHE.reshape(b, l, g, r, e).transpose(0, 2, 1, 3, 4).reshape(b, g, l * r, e)
  q = tiles.pad_axis(tiles.pad_axis(q, 2, n_pad), 3, e_pad)
  k = tiles.pad_axis(tiles.pad_axis(k_BGSE, 2, s_pad), 3, e_pad)
  v = tiles.pad_axis(tiles.pad_axis(v_BGSE, 2, s_pad), 3, e_pad)
  q_seg = tiles.pad_axis(jnp.repeat(tiles.as_int32(q_segment_ids), r, axis=1), 1, n_pad)
  q_ord = tiles.pad_axis(jnp.repeat(tiles.as_int32(q_order), r, axis=1), 1, n_pad)
  k_seg = tiles.pad_axis(tiles.as_int32(kv_segment_ids), 1, s_pad)
  k_ord = tiles.pad_axis(tiles.as_int32(kv_order), 1, s_pad)
  q_table = tiles.block_table(q_seg, q_ord, block_rows)
  k_table = tiles.block_table(k_seg, k_ord, block_keys)
  k_range, q_range = tiles.block_ranges(q_table, k_table, window=window, block_rows=block_rows,
                                        block_keys=block_keys, heads_per_row=heads_per_row)
  return Problem(q, k, v, q_seg, q_ord, k_seg, k_ord, q_table, k_table, k_range, q_range)


def _setup(q_BLHE, k_BGSE, v_BGSE, masks, *, scale, causal, softcap, window, block_rows,
           block_keys, variant, interpret):
  b, l, h, e = q_BLHE.shape
  g, s = k_BGSE.shape[1], k_BGSE.shape[2]
  if h % g:
    raise KernelUnsupportedError(f"{h} query heads are not a multiple of {g} kv heads")
  variant = variant or default_variant()
  interpret = jax.default_backend() == "cpu" if interpret is None else interpret
  r = h // g
  block_rows, block_keys = _block_sizes(variant, l * r, s, block_rows, block_keys, interpret)
  heads_per_row = r if causal and l == s else None
  p = prepare(q_BLHE, k_BGSE, v_BGSE, *masks, block_rows=block_rows, block_keys=block_keys,
              heads_per_row=heads_per_row, window=window, pad_head_dim=variant == "triton")
  cfg = Config(scale=float(e ** -0.5 if scale is None else scale),
               softcap=None if softcap is None else float(softcap),
               window=None if window is None else int(window), heads_per_row=heads_per_row,
               block_rows=block_rows, block_keys=block_keys, variant=variant, interpret=interpret)
  return p, cfg


def _unfold(x_BGNE, b, l, h, e):
  """[B, G, N(padded), E(padded)] rows back to [B, L, H, E]."""
  g = x_BGNE.shape[1]
  r = h // g
  x = x_BGNE[:, :, :l * r, :e].reshape(b, g, l, r, e).transpose(0, 2, 1, 3, 4)
  return x.reshape(b, l, h, e)


@gin.configurable("pallas_attention", denylist=["scale", "causal", "softcap", "window"])
def attention(q_BLHE, k_BSGE, v_BSGE, q_segment_ids, q_order, kv_segment_ids, kv_order, *,
              scale: float | None = None, causal: bool = False, softcap: float | None = None,
              window: int | None = None, block_rows: int = 128, block_keys: int = 128,
              variant: str | None = None, interpret: bool | None = None):
  """Flash attention under the (segment, order) contract; see `reference.attention`.

  Args (beyond the reference's):
    causal: the promise that order strictly increases with index within a segment and L == S
      (self-attention): tiles above the diagonal are skipped by index as well.
    softcap: logits become softcap * tanh(logits / softcap).
    window: a query sees keys with query_order - key_order < window only.
    block_rows, block_keys: tile sizes (rows are query positions x R heads); gin-configurable.
    variant: "mosaic" (TPU) or "triton" (GPU); default from the backend ("triton" on CPU).
    interpret: run the Pallas interpreter; default on CPU.
  """
  b, l, h, e = q_BLHE.shape
  p, cfg = _setup(q_BLHE, k_BSGE.transpose(0, 2, 1, 3), v_BSGE.transpose(0, 2, 1, 3),
                  (q_segment_ids, q_order, kv_segment_ids, kv_order), scale=scale, causal=causal,
                  softcap=softcap, window=window, block_rows=block_rows, block_keys=block_keys,
                  variant=variant, interpret=interpret)
  return _unfold(_flash(p, cfg), b, l, h, e)


def forward_heads_major(q_BLHE, k_BGSE, v_BGSE, q_segment_ids, q_order, kv_segment_ids, kv_order,
                        *, scale: float | None = None, block_rows: int = 128,
                        block_keys: int = 128, variant: str | None = None,
                        interpret: bool | None = None):
  """Forward only, keys heads-major (a KV cache as it is stored): (out [B, L, H, E], lse
  f32[B, L, H, 1], NEG for queries that see no key), for merging with other key sets."""
  b, l, h, e = q_BLHE.shape
  p, cfg = _setup(q_BLHE, k_BGSE, v_BGSE, (q_segment_ids, q_order, kv_segment_ids, kv_order),
                  scale=scale, causal=False, softcap=None, window=None, block_rows=block_rows,
                  block_keys=block_keys, variant=variant, interpret=interpret)
  out, lse = _variant(cfg.variant).forward(p, cfg)
  return _unfold(out, b, l, h, e), _unfold(lse, b, l, h, 1)
