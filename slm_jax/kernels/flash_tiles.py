"""The (segment, order) tile logic shared by the TPU and GPU flash-attention kernels.

Rows are query positions with the R query heads of a kv head folded in (row = l * R + r), so each
kv head is one attention problem of N = L * R rows against S keys. Rows and keys are cut into
blocks; a table built in XLA holds, per block, the extremes of its segment ids and orders
(`block_table`, O(N / block) entries). From two blocks' entries a kernel decides, with a few
scalar comparisons, whether their tile is

  SKIP     no row can see any key (different segments, every key later than every row, or every
           key outside the sliding window): it is never computed;
  FULL     every row sees every key (one non-zero segment on both sides, orders all visible): the
           tile is computed without a mask;
  PARTIAL  anything else: the exact element-wise mask is applied.

The same decision runs vectorized in XLA (`tile_status` over the whole [nq, nk] grid) to give each
row block the range of key blocks it may need (`block_ranges`), which bounds the GPU kernels' loops
and lets the TPU kernels repeat a block index so skipped tiles cost no copy.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
from jax import lax

# Sentinels for empty blocks; orders must stay within +-2**29 so differences cannot overflow.
_EMPTY_MIN = 2 ** 30
_EMPTY_MAX = -(2 ** 30)
NEG = -0.7 * float(jnp.finfo(jnp.float32).max)   # masked logits: finite, so no inf - inf

# Fields of one block's table entry.
SEG_MIN, SEG_MAX, SEG_MIN_ALL, ORD_MIN, ORD_MAX = range(5)
NUM_FIELDS = 5
SKIP, PARTIAL, FULL = 0, 1, 2


def block_table(segment_ids_BN, order_BN, block: int):
  """int32[B, N / block, NUM_FIELDS]: per block, the smallest non-zero segment id, the largest
  segment id, the smallest segment id (0 when the block has padding), and the extremes of the
  orders of its non-padding entries. N must be a multiple of `block`."""
  b, n = segment_ids_BN.shape
  seg = segment_ids_BN.reshape(b, n // block, block)
  order = order_BN.reshape(b, n // block, block)
  real = seg != 0
  return jnp.stack([
      jnp.where(real, seg, _EMPTY_MIN).min(-1),
      seg.max(-1),
      seg.min(-1),
      jnp.where(real, order, _EMPTY_MIN).min(-1),
      jnp.where(real, order, _EMPTY_MAX).max(-1),
  ], axis=-1).astype(jnp.int32)


def tile_status(q_entry, k_entry, *, window: int | None, causal_skip=False):
  """SKIP / PARTIAL / FULL of a (row block, key block) tile from their table entries.

  Works on scalars inside a kernel and on broadcast arrays in XLA. `causal_skip`: the caller knows
  (from the causal promise and block indices) that every key of the tile lies after every row.
  """
  q_smin, q_smax, q_sall, q_omin, q_omax = q_entry
  k_smin, k_smax, k_sall, k_omin, k_omax = k_entry
  skip = ((q_smax == 0) | (k_smax == 0) | (q_smax < k_smin) | (k_smax < q_smin)
          | (k_omin > q_omax))
  full = ((q_sall == q_smax) & (k_sall == k_smax) & (q_smax == k_smax) & (q_smax != 0)
          & (k_omax <= q_omin))
  if window is not None:
    skip = skip | (q_omin - k_omax >= window)
    full = full & (q_omax - k_omin < window)
  skip = skip | causal_skip
  return jnp.where(skip, SKIP, jnp.where(full, FULL, PARTIAL)).astype(jnp.int32)


def causal_skip(i, j, *, block_rows: int, block_keys: int, heads_per_row: int | None):
  """With the causal promise (self-attention, order increasing with index within a segment), a
  tile whose first key index lies after the position of its last row is masked entirely."""
  if heads_per_row is None:
    return False
  last_position = ((i + 1) * block_rows - 1) // heads_per_row
  return j * block_keys > last_position


def block_ranges(q_table, k_table, *, window, block_rows, block_keys, heads_per_row):
  """int32[B, nq, 2] first and last key block each row block needs, and int32[B, nk, 2] first and
  last row block each key block needs (last < first: none)."""
  nq, nk = q_table.shape[1], k_table.shape[1]
  q_entry = tuple(q_table[:, :, None, f] for f in range(NUM_FIELDS))
  k_entry = tuple(k_table[:, None, :, f] for f in range(NUM_FIELDS))
  i = jnp.arange(nq)[:, None]
  j = jnp.arange(nk)[None, :]
  skip_ij = causal_skip(i, j, block_rows=block_rows, block_keys=block_keys,
                        heads_per_row=heads_per_row)
  live_BQK = tile_status(q_entry, k_entry, window=window, causal_skip=skip_ij) != SKIP

  def first_last(live, n):
    idx = jnp.arange(n)
    first = jnp.where(live, idx, n).min(-1)
    last = jnp.where(live, idx, -1).max(-1)
    return jnp.stack([first, last], -1).astype(jnp.int32)

  return first_last(live_BQK, nk), first_last(jnp.swapaxes(live_BQK, 1, 2), nq)


def exact_mask(q_seg, q_ord, k_seg, k_ord, window: int | None):
  """bool[rows, keys] from column vectors [rows, 1] and row vectors [1, keys]."""
  mask = (q_seg == k_seg) & (q_seg != 0) & (k_ord <= q_ord)
  if window is not None:
    mask = mask & (q_ord - k_ord < window)
  return mask


_NT = (((1,), (1,)), ((), ()))   # a @ b.T
_TN = (((0,), (0,)), ((), ()))   # a.T @ b


def logits(q, k, scale: float, softcap: float | None):
  """f32[rows, keys] scaled (and soft-capped) logits, and tanh of the capped logits (or None)."""
  s = lax.dot_general(q, k, _NT, preferred_element_type=jnp.float32) * scale
  if softcap is None:
    return s, None
  t = jnp.tanh(s / softcap)
  return softcap * t, t


def forward_tile(q, k, v, mask, m_prev, l_prev, acc_prev, *, scale, softcap):
  """One online-softmax step: (m, l, acc) after the keys of this tile ([rows, 1], [rows, 1],
  [rows, E], all f32); `mask` None for a FULL tile."""
  s, _ = logits(q, k, scale, softcap)
  if mask is not None:
    s = jnp.where(mask, s, NEG)
  m_new = jnp.maximum(m_prev, s.max(axis=-1, keepdims=True))
  p = jnp.exp(s - m_new)
  if mask is not None:
    p = jnp.where(mask, p, 0.0)
  alpha = jnp.exp(m_prev - m_new)
  l_new = alpha * l_prev + p.sum(axis=-1, keepdims=True)
  acc_new = alpha * acc_prev + jnp.dot(p.astype(v.dtype), v, preferred_element_type=jnp.float32)
  return m_new, l_new, acc_new


def finish_forward(m, l, acc):
  """(out, lse): rows with no visible key output zeros and a log-sum-exp of NEG (they weigh
  nothing when merged with other keys; the backward masks them entirely)."""
  seen = l > 0
  out = jnp.where(seen, acc / jnp.where(seen, l, 1.0), 0.0)
  lse = jnp.where(seen, m + jnp.log(jnp.where(seen, l, 1.0)), NEG)
  return out, lse


def backward_tile(q, k, v, do, lse, delta, mask, *, scale, softcap):
  """(p, ds) of one tile, f32[rows, keys]: probabilities recomputed from the log-sum-exp and the
  gradient of the (pre-cap, pre-scale) logits; dq += ds @ k * scale, dk += ds.T @ q * scale,
  dv += p.T @ do."""
  s, t = logits(q, k, scale, softcap)
  if mask is not None:
    s = jnp.where(mask, s, NEG)
  p = jnp.exp(s - lse)
  if mask is not None:
    p = jnp.where(mask, p, 0.0)
  dp = lax.dot_general(do, v, _NT, preferred_element_type=jnp.float32)
  ds = p * (dp - delta)
  if t is not None:
    ds = ds * (1.0 - t * t)
  return p, ds


def dq_step(ds, k, scale):
  return jnp.dot(ds.astype(k.dtype), k, preferred_element_type=jnp.float32) * scale


def dk_step(ds, q, scale):
  return lax.dot_general(ds.astype(q.dtype), q, _TN, preferred_element_type=jnp.float32) * scale


def dv_step(p, do):
  return lax.dot_general(p.astype(do.dtype), do, _TN, preferred_element_type=jnp.float32)


def pad_axis(x, axis: int, size: int, value=0):
  """x padded with `value` at the end of `axis` to `size`."""
  extra = size - x.shape[axis]
  if extra == 0:
    return x
  widths = [(0, 0)] * x.ndim
  widths[axis] = (0, extra)
  return jnp.pad(x, widths, constant_values=value)


def round_up(n: int, m: int) -> int:
  return -(-n // m) * m


def as_int32(x) -> jax.Array:
  return jnp.asarray(x, jnp.int32)
