"""GPU (Triton) flash-attention kernels: forward, dq and dk/dv, looping over the block range.

Grid (B, G, row blocks) for the forward and dq kernels, (B, G, key blocks) for dk/dv. Each program
holds its block and loops (`fori_loop`) over the other side's blocks in the range from the XLA
table, whole rows of keys (or rows) addressed with `pl.ds`; inside the loop a `lax.cond` skips the
tiles the table marks SKIP and the others apply the exact mask. The block tables are ordinary
inputs (Triton has no scalar prefetch), read one scalar at a time. Block sizes and the head dim
are powers of two (the wrapper pads the head dim; `flash._block_sizes`).
"""
from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from jax import lax
from jax.experimental import pallas as pl
from jax.experimental.pallas import triton as plgpu

from slm_jax.kernels import flash_tiles as tiles


def _entry(tab_ref, b, n, i):
  base = (b * n + i) * tiles.NUM_FIELDS
  return tuple(tab_ref[base + f] for f in range(tiles.NUM_FIELDS))


def _live(cfg, qtab, ktab, b, i, j, nq, nk):
  skip = tiles.causal_skip(i, j, block_rows=cfg.block_rows, block_keys=cfg.block_keys,
                           heads_per_row=cfg.heads_per_row)
  status = tiles.tile_status(_entry(qtab, b, nq, i), _entry(ktab, b, nk, j), window=cfg.window,
                             causal_skip=skip)
  return status != tiles.SKIP


def _loop(range_ref, b, n, i, body, init):
  """fori_loop of body over the blocks in block i's range."""
  lo, hi = range_ref[(b * n + i) * 2], range_ref[(b * n + i) * 2 + 1]
  return lax.fori_loop(lo, hi + 1, body, init)


def _fwd_kernel(q_ref, k_ref, v_ref, qseg_ref, qord_ref, kseg_ref, kord_ref, qtab, ktab, krange,
                o_ref, lse_ref, *, cfg, nq, nk):
  b, i = pl.program_id(0), pl.program_id(2)
  bq, bk = cfg.block_rows, cfg.block_keys
  q = q_ref[...]
  q_seg, q_ord = qseg_ref[...][:, None], qord_ref[...][:, None]

  def body(j, carry):
    def compute():
      keys = pl.ds(j * bk, bk)
      mask = tiles.exact_mask(q_seg, q_ord, kseg_ref[keys][None, :], kord_ref[keys][None, :],
                              cfg.window)
      return tiles.forward_tile(q, k_ref[keys, :], v_ref[keys, :], mask, *carry, scale=cfg.scale,
                                softcap=cfg.softcap)
    return lax.cond(_live(cfg, qtab, ktab, b, i, j, nq, nk), compute, lambda: carry)

  init = (jnp.full((bq, 1), tiles.NEG, jnp.float32), jnp.zeros((bq, 1), jnp.float32),
          jnp.zeros((bq, q.shape[-1]), jnp.float32))
  out, lse = tiles.finish_forward(*_loop(krange, b, nq, i, body, init))
  o_ref[...] = out.astype(o_ref.dtype)
  lse_ref[...] = lse[:, 0]


def _dq_kernel(q_ref, k_ref, v_ref, qseg_ref, qord_ref, kseg_ref, kord_ref, qtab, ktab, krange,
               do_ref, lse_ref, delta_ref, dq_ref, *, cfg, nq, nk):
  b, i = pl.program_id(0), pl.program_id(2)
  bk = cfg.block_keys
  q, do = q_ref[...], do_ref[...]
  lse, delta = lse_ref[...][:, None], delta_ref[...][:, None]
  q_seg, q_ord = qseg_ref[...][:, None], qord_ref[...][:, None]

  def body(j, dq):
    def compute():
      keys = pl.ds(j * bk, bk)
      mask = tiles.exact_mask(q_seg, q_ord, kseg_ref[keys][None, :], kord_ref[keys][None, :],
                              cfg.window)
      k = k_ref[keys, :]
      _, ds = tiles.backward_tile(q, k, v_ref[keys, :], do, lse, delta, mask, scale=cfg.scale,
                                  softcap=cfg.softcap)
      return dq + tiles.dq_step(ds, k, cfg.scale)
    return lax.cond(_live(cfg, qtab, ktab, b, i, j, nq, nk), compute, lambda: dq)

  dq = _loop(krange, b, nq, i, body, jnp.zeros(q.shape, jnp.float32))
  dq_ref[...] = dq.astype(dq_ref.dtype)


def _dkv_kernel(q_ref, k_ref, v_ref, qseg_ref, qord_ref, kseg_ref, kord_ref, qtab, ktab, qrange,
                do_ref, lse_ref, delta_ref, dk_ref, dv_ref, *, cfg, nq, nk):
  b, j = pl.program_id(0), pl.program_id(2)
  bq = cfg.block_rows
  k, v = k_ref[...], v_ref[...]
  k_seg, k_ord = kseg_ref[...][None, :], kord_ref[...][None, :]

  def body(i, carry):
    def compute():
      dk, dv = carry
      rows = pl.ds(i * bq, bq)
      mask = tiles.exact_mask(qseg_ref[rows][:, None], qord_ref[rows][:, None], k_seg, k_ord,
                              cfg.window)
      q, do = q_ref[rows, :], do_ref[rows, :]
      p, ds = tiles.backward_tile(q, k, v, do, lse_ref[rows][:, None], delta_ref[rows][:, None],
                                  mask, scale=cfg.scale, softcap=cfg.softcap)
      return dk + tiles.dk_step(ds, q, cfg.scale), dv + tiles.dv_step(p, do)
    return lax.cond(_live(cfg, qtab, ktab, b, i, j, nq, nk), compute, lambda: carry)

  zeros = jnp.zeros(k.shape, jnp.float32)
  dk, dv = _loop(qrange, b, nk, j, body, (zeros, zeros))
  dk_ref[...] = dk.astype(dk_ref.dtype)
  dv_ref[...] = dv.astype(dv_ref.dtype)


def _flat_pow2(x):
  """A table flattened and padded to a power-of-two length (Triton block shapes)."""
  x = x.reshape(-1)
  return tiles.pad_axis(x, 0, 1 << max(0, (x.size - 1).bit_length()))


def _whole(shape):
  """A BlockSpec of the whole array (tables), whatever the grid."""
  return pl.BlockSpec(shape, lambda *_: (0,) * len(shape))


def _call(kernel, p, cfg, grid, in_specs, out_specs, out_shape, extra, range_, name):
  tables = [_flat_pow2(p.q_table), _flat_pow2(p.k_table), _flat_pow2(range_)]
  return pl.pallas_call(
      kernel, grid=grid, in_specs=in_specs + [_whole(t.shape) for t in tables] + extra[1],
      out_specs=out_specs, out_shape=out_shape,
      compiler_params=plgpu.CompilerParams(num_warps=4 if p.q.shape[-1] <= 64 else 8,
                                           num_stages=2),
      interpret=cfg.interpret, name=name,
  )(p.q, p.k, p.v, p.q_seg, p.q_ord, p.k_seg, p.k_ord, *tables, *extra[0])


def _row_block_specs(cfg, e, n, s):
  """Specs for a grid over row blocks: q-side blocked, k-side whole."""
  bq = cfg.block_rows
  row = pl.BlockSpec((None, None, bq, e), lambda b, g, i: (b, g, i, 0))
  row_vec = pl.BlockSpec((None, bq), lambda b, g, i: (b, i))
  key_all = pl.BlockSpec((None, None, s, e), lambda b, g, i: (b, g, 0, 0))
  key_vec_all = pl.BlockSpec((None, s), lambda b, g, i: (b, 0))
  row_scalar = pl.BlockSpec((None, None, bq), lambda b, g, i: (b, g, i))
  return [row, key_all, key_all, row_vec, row_vec, key_vec_all, key_vec_all], row, row_scalar


def forward(p, cfg):
  """(out [B, G, N, E], lse f32[B, G, N, 1]) of a prepared problem (`flash.Problem`)."""
  b, g, n, e = p.q.shape
  s = p.k.shape[2]
  nq, nk = n // cfg.block_rows, s // cfg.block_keys
  in_specs, row, row_scalar = _row_block_specs(cfg, e, n, s)
  out, lse = _call(functools.partial(_fwd_kernel, cfg=cfg, nq=nq, nk=nk), p, cfg, (b, g, nq),
                   in_specs, [row, row_scalar],
                   [jax.ShapeDtypeStruct(p.q.shape, p.q.dtype),
                    jax.ShapeDtypeStruct((b, g, n), jnp.float32)],
                   ((), []), p.k_range, "slm_flash_fwd")
  return out, lse[..., None]


def backward(p, cfg, do, lse, delta):
  """(dq, dk, dv) of a prepared problem; lse and delta f32[B, G, N, 1]."""
  b, g, n, e = p.q.shape
  s = p.k.shape[2]
  nq, nk = n // cfg.block_rows, s // cfg.block_keys
  lse, delta = lse[..., 0], delta[..., 0]
  in_specs, row, row_scalar = _row_block_specs(cfg, e, n, s)
  dq = _call(functools.partial(_dq_kernel, cfg=cfg, nq=nq, nk=nk), p, cfg, (b, g, nq), in_specs,
             row, jax.ShapeDtypeStruct(p.q.shape, p.q.dtype),
             ((do, lse, delta), [row, row_scalar, row_scalar]), p.k_range, "slm_flash_dq")
  bk = cfg.block_keys
  row_all = pl.BlockSpec((None, None, n, e), lambda b, g, j: (b, g, 0, 0))
  row_vec_all = pl.BlockSpec((None, n), lambda b, g, j: (b, 0))
  key = pl.BlockSpec((None, None, bk, e), lambda b, g, j: (b, g, j, 0))
  key_vec = pl.BlockSpec((None, bk), lambda b, g, j: (b, j))
  row_scalar_all = pl.BlockSpec((None, None, n), lambda b, g, j: (b, g, 0))
  dk, dv = _call(functools.partial(_dkv_kernel, cfg=cfg, nq=nq, nk=nk), p, cfg, (b, g, nk),
                 [row_all, key, key, row_vec_all, row_vec_all, key_vec, key_vec], [key, key],
                 [jax.ShapeDtypeStruct(p.k.shape, p.k.dtype),
                  jax.ShapeDtypeStruct(p.v.shape, p.v.dtype)],
                 ((do, lse, delta), [row_all, row_scalar_all, row_scalar_all]), p.q_range,
                 "slm_flash_dkv")
  return dq, dk, dv
