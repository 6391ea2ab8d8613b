"""TPU (Mosaic) flash-attention kernels: forward, dq and dk/dv, with the tile table as scalar prefetch.

Grid (B, G, row blocks, key blocks) for the forward and dq kernels, (B, G, key blocks, row blocks)
for dk/dv; the innermost axis is the reduction, accumulated in VMEM scratch and written on its last
step. The block tables and the per-block ranges live in SMEM (`PrefetchScalarGridSpec`): each step
reads its tile's status there and runs under `pl.when` (nothing for SKIP, no mask for FULL). The
index maps clamp the reduction index into the block's range, so the steps before and after it
re-use the block already in VMEM and no copy is issued for them.

Blocks follow the 8 x 128 tiling: row blocks are multiples of 8, key blocks multiples of 128
(keys sit on the lanes of the logits and of the key-side segment ids), head dim whole.
"""
from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from jax.experimental import pallas as pl
from jax.experimental.pallas import tpu as pltpu

from slm_jax.kernels import flash_tiles as tiles

ROW_ALIGN, KEY_ALIGN = 8, 128


def _entry(tab_ref, b, n, i):
  base = (b * n + i) * tiles.NUM_FIELDS
  return tuple(tab_ref[base + f] for f in range(tiles.NUM_FIELDS))


def _clamped(range_ref, b, n, i, j):
  """j clamped into [first, last] of block i's range (block 0 when the range is empty)."""
  lo, hi = range_ref[(b * n + i) * 2], range_ref[(b * n + i) * 2 + 1]
  return jnp.minimum(jnp.maximum(j, lo), jnp.maximum(hi, 0))


def _status(cfg, qtab, ktab, b, i, j, nq, nk):
  skip = tiles.causal_skip(i, j, block_rows=cfg.block_rows, block_keys=cfg.block_keys,
                           heads_per_row=cfg.heads_per_row)
  return tiles.tile_status(_entry(qtab, b, nq, i), _entry(ktab, b, nk, j), window=cfg.window,
                           causal_skip=skip)


def _on_status(status, step):
  """Runs step(masked) for PARTIAL and FULL tiles, nothing for SKIP."""
  pl.when(status == tiles.PARTIAL)(lambda: step(True))
  pl.when(status == tiles.FULL)(lambda: step(False))


def _fwd_kernel(qtab, ktab, krange, _qrange, q_ref, k_ref, v_ref, qseg_ref, qord_ref, kseg_ref,
                kord_ref, o_ref, lse_ref, m_scr, l_scr, acc_scr, *, cfg, nq, nk):
  b, i, j = pl.program_id(0), pl.program_id(2), pl.program_id(3)

  @pl.when(j == 0)
  def _init():
    m_scr[...] = jnp.full(m_scr.shape, tiles.NEG, jnp.float32)
    l_scr[...] = jnp.zeros(l_scr.shape, jnp.float32)
    acc_scr[...] = jnp.zeros(acc_scr.shape, jnp.float32)

  def step(masked):
    mask = (tiles.exact_mask(qseg_ref[...], qord_ref[...], kseg_ref[...], kord_ref[...], cfg.window)
            if masked else None)
    m, l, acc = tiles.forward_tile(q_ref[...], k_ref[...], v_ref[...], mask, m_scr[...], l_scr[...],
                                   acc_scr[...], scale=cfg.scale, softcap=cfg.softcap)
    m_scr[...], l_scr[...], acc_scr[...] = m, l, acc

  _on_status(_status(cfg, qtab, ktab, b, i, j, nq, nk), step)

  @pl.when(j == nk - 1)
  def _finish():
    out, lse = tiles.finish_forward(m_scr[...], l_scr[...], acc_scr[...])
    o_ref[...] = out.astype(o_ref.dtype)
    lse_ref[...] = lse


def _dq_kernel(qtab, ktab, krange, _qrange, q_ref, k_ref, v_ref, qseg_ref, qord_ref, kseg_ref,
               kord_ref, do_ref, lse_ref, delta_ref, dq_ref, dq_scr, *, cfg, nq, nk):
  b, i, j = pl.program_id(0), pl.program_id(2), pl.program_id(3)

  @pl.when(j == 0)
  def _init():
    dq_scr[...] = jnp.zeros(dq_scr.shape, jnp.float32)

  def step(masked):
    mask = (tiles.exact_mask(qseg_ref[...], qord_ref[...], kseg_ref[...], kord_ref[...], cfg.window)
            if masked else None)
    k = k_ref[...]
    _, ds = tiles.backward_tile(q_ref[...], k, v_ref[...], do_ref[...], lse_ref[...],
                                delta_ref[...], mask, scale=cfg.scale, softcap=cfg.softcap)
    dq_scr[...] += tiles.dq_step(ds, k, cfg.scale)

  _on_status(_status(cfg, qtab, ktab, b, i, j, nq, nk), step)

  @pl.when(j == nk - 1)
  def _finish():
    dq_ref[...] = dq_scr[...].astype(dq_ref.dtype)


def _dkv_kernel(qtab, ktab, _krange, qrange, q_ref, k_ref, v_ref, qseg_ref, qord_ref, kseg_ref,
                kord_ref, do_ref, lse_ref, delta_ref, dk_ref, dv_ref, dk_scr, dv_scr, *, cfg, nq, nk):
  b, j, i = pl.program_id(0), pl.program_id(2), pl.program_id(3)

  @pl.when(i == 0)
  def _init():
    dk_scr[...] = jnp.zeros(dk_scr.shape, jnp.float32)
    dv_scr[...] = jnp.zeros(dv_scr.shape, jnp.float32)

  def step(masked):
    mask = (tiles.exact_mask(qseg_ref[...], qord_ref[...], kseg_ref[...], kord_ref[...], cfg.window)
            if masked else None)
    q, do = q_ref[...], do_ref[...]
    p, ds = tiles.backward_tile(q, k_ref[...], v_ref[...], do, lse_ref[...], delta_ref[...], mask,
                                scale=cfg.scale, softcap=cfg.softcap)
    dk_scr[...] += tiles.dk_step(ds, q, cfg.scale)
    dv_scr[...] += tiles.dv_step(p, do)

  _on_status(_status(cfg, qtab, ktab, b, i, j, nq, nk), step)

  @pl.when(i == nq - 1)
  def _finish():
    dk_ref[...] = dk_scr[...].astype(dk_ref.dtype)
    dv_ref[...] = dv_scr[...].astype(dv_ref.dtype)


def _specs(cfg, e, nq, nk, *, rows_inner: bool):
  """Block specs of (q, k, v, q seg, q order, k seg, k order) and of the row-side extras
  (do, lse, delta), for grids (b, g, i, j) or, with `rows_inner`, (b, g, j, i)."""
  bq, bk = cfg.block_rows, cfg.block_keys

  def ids(grid_idx, refs):
    b, g, x, y = grid_idx
    qtab, ktab, krange, qrange = refs
    del qtab, ktab
    if rows_inner:        # (b, g, j, i): clamp the row block into key block j's range
      return b, g, _clamped(qrange, b, nk, x, y), x
    return b, g, x, _clamped(krange, b, nq, x, y)

  def row_map(*a):
    b, g, i, _ = ids(a[:4], a[4:])
    return b, g, i, 0

  def key_map(*a):
    b, g, _, j = ids(a[:4], a[4:])
    return b, g, j, 0

  def row_vec_map(*a):
    b, _, i, _ = ids(a[:4], a[4:])
    return b, i, 0

  def key_vec_map(*a):
    b, _, _, j = ids(a[:4], a[4:])
    return b, 0, j

  row = pl.BlockSpec((None, None, bq, e), row_map)
  key = pl.BlockSpec((None, None, bk, e), key_map)
  row_col = pl.BlockSpec((None, None, bq, 1), row_map)
  q_vec = pl.BlockSpec((None, bq, 1), row_vec_map)
  k_vec = pl.BlockSpec((None, 1, bk), key_vec_map)
  return [row, key, key, q_vec, q_vec, k_vec, k_vec], (row, row_col, key)


def _prefetch(p):
  return (p.q_table.reshape(-1), p.k_table.reshape(-1), p.k_range.reshape(-1),
          p.q_range.reshape(-1))


def _operands(p):
  b, n = p.q_seg.shape
  s = p.k_seg.shape[1]
  return (p.q, p.k, p.v, p.q_seg.reshape(b, n, 1), p.q_ord.reshape(b, n, 1),
          p.k_seg.reshape(b, 1, s), p.k_ord.reshape(b, 1, s))


def _params(inner):
  return pltpu.CompilerParams(dimension_semantics=("parallel", "parallel", "parallel", inner))


def forward(p, cfg):
  """(out [B, G, N, E], lse f32[B, G, N, 1]) of a prepared problem (`flash.Problem`)."""
  b, g, n, e = p.q.shape
  nq, nk = n // cfg.block_rows, p.k.shape[2] // cfg.block_keys
  in_specs, (row, row_col, _) = _specs(cfg, e, nq, nk, rows_inner=False)
  return pl.pallas_call(
      functools.partial(_fwd_kernel, cfg=cfg, nq=nq, nk=nk),
      grid_spec=pltpu.PrefetchScalarGridSpec(
          num_scalar_prefetch=4, grid=(b, g, nq, nk), in_specs=in_specs,
          out_specs=[row, row_col],
          scratch_shapes=[pltpu.VMEM((cfg.block_rows, 1), jnp.float32),
                          pltpu.VMEM((cfg.block_rows, 1), jnp.float32),
                          pltpu.VMEM((cfg.block_rows, e), jnp.float32)]),
      out_shape=[jax.ShapeDtypeStruct(p.q.shape, p.q.dtype),
                 jax.ShapeDtypeStruct((b, g, n, 1), jnp.float32)],
      compiler_params=_params("arbitrary"), interpret=cfg.interpret, name="slm_flash_fwd",
  )(*_prefetch(p), *_operands(p))


def backward(p, cfg, do, lse, delta):
  """(dq, dk, dv) of a prepared problem; lse and delta f32[B, G, N, 1]."""
  b, g, n, e = p.q.shape
  nq, nk = n // cfg.block_rows, p.k.shape[2] // cfg.block_keys
  in_specs, (row, row_col, _) = _specs(cfg, e, nq, nk, rows_inner=False)
  dq = pl.pallas_call(
      functools.partial(_dq_kernel, cfg=cfg, nq=nq, nk=nk),
      grid_spec=pltpu.PrefetchScalarGridSpec(
          num_scalar_prefetch=4, grid=(b, g, nq, nk),
          in_specs=in_specs + [row, row_col, row_col], out_specs=row,
          scratch_shapes=[pltpu.VMEM((cfg.block_rows, e), jnp.float32)]),
      out_shape=jax.ShapeDtypeStruct(p.q.shape, p.q.dtype),
      compiler_params=_params("arbitrary"), interpret=cfg.interpret, name="slm_flash_dq",
  )(*_prefetch(p), *_operands(p), do, lse, delta)
  in_specs, (row, row_col, key) = _specs(cfg, e, nq, nk, rows_inner=True)
  dk, dv = pl.pallas_call(
      functools.partial(_dkv_kernel, cfg=cfg, nq=nq, nk=nk),
      grid_spec=pltpu.PrefetchScalarGridSpec(
          num_scalar_prefetch=4, grid=(b, g, nk, nq),
          in_specs=in_specs + [row, row_col, row_col], out_specs=[key, key],
          scratch_shapes=[pltpu.VMEM((cfg.block_keys, e), jnp.float32),
                          pltpu.VMEM((cfg.block_keys, e), jnp.float32)]),
      out_shape=[jax.ShapeDtypeStruct(p.k.shape, p.k.dtype),
                 jax.ShapeDtypeStruct(p.v.shape, p.v.dtype)],
      compiler_params=_params("arbitrary"), interpret=cfg.interpret, name="slm_flash_dkv",
  )(*_prefetch(p), *_operands(p), do, lse, delta)
  return dq, dk, dv
