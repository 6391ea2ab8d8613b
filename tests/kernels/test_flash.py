"""Our Pallas flash attention (interpret mode on CPU) equals the XLA reference, forward and dq/dk/dv."""
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from slm_jax.kernels import flash, flash_tiles, reference
from test_blockwise import packed_rows

TOL = {jnp.float32: dict(atol=2e-5, rtol=2e-5), jnp.bfloat16: dict(atol=3e-2, rtol=3e-2)}


def qkv(rng, b, l, s, h, g, e, dtype=jnp.float32):
  def normal(*shape):
    return jnp.asarray(rng.normal(size=shape), jnp.float32).astype(dtype)
  return normal(b, l, h, e), normal(b, s, g, e), normal(b, s, g, e)


def interleaved(rng, b, l, s):
  """Two streams of one document per row, interleaved at random: each position's index in the
  merged order (the zipper cross-attention case); the query rows' documents end early at random."""
  q_ord, k_ord = np.zeros((b, l), np.int32), np.zeros((b, s), np.int32)
  for r in range(b):
    merged = rng.permutation(l + s)
    q_ord[r], k_ord[r] = np.sort(merged[:l]), np.sort(merged[l:])
  q_seg = np.ones((b, l), np.int32)
  q_seg[:, l - int(rng.integers(1, l // 3)):] = 0
  return jnp.asarray(q_seg), jnp.asarray(q_ord), jnp.ones((b, s), jnp.int32), jnp.asarray(k_ord)


def check(q, k, v, masks, *, dtype=jnp.float32, kernel_kw=None, ref_kw=None, grads=True):
  """Forward and the three gradients of the kernel (under jit) against the reference (jitted too:
  eagerly, each of its ops would compile on its own)."""
  kernel_kw, ref_kw = kernel_kw or {}, ref_kw or {}
  w = jax.random.normal(jax.random.key(1), q.shape, jnp.float32)
  ours = functools.partial(flash.attention, **kernel_kw)
  ref = functools.partial(reference.attention, **ref_kw)

  def loss(fn, q, k, v):
    return jnp.sum(fn(q, k, v, *masks).astype(jnp.float32) * w)

  got = jax.jit(lambda q, k, v: ours(q, k, v, *masks))(q, k, v)
  # The reference in f32 from the same (rounded) inputs: bf16 is judged against exact math.
  f32 = [x.astype(jnp.float32) for x in (q, k, v)]
  want = jax.jit(ref)(*f32, *masks)
  assert got.dtype == q.dtype and np.isfinite(np.asarray(got, np.float32)).all()
  np.testing.assert_allclose(np.asarray(got, np.float32), want, **TOL[dtype])
  if not grads:
    return got
  got_g = jax.jit(jax.grad(functools.partial(loss, ours), argnums=(0, 1, 2)))(q, k, v)
  want_g = jax.jit(jax.grad(functools.partial(loss, ref), argnums=(0, 1, 2)))(*f32)
  for name, a, b in zip("qkv", got_g, want_g):
    scale = float(np.abs(b).max()) or 1.0      # gradients are judged relative to their size
    np.testing.assert_allclose(np.asarray(a, np.float32) / scale, np.asarray(b) / scale,
                               atol=TOL[dtype]["atol"], err_msg=f"d{name}")
  return got


@pytest.mark.parametrize("variant", ["mosaic", "triton"])
def test_packed_causal_ragged_gqa(variant):
  rng = np.random.default_rng()
  q, k, v = qkv(rng, 2, 40, 40, 4, 2, 8)     # 40 rows x R=2: not a multiple of the 16-row block
  seg, pos = packed_rows(rng, 2, 40)
  check(q, k, v, (seg, pos, seg, pos),
        kernel_kw=dict(causal=True, block_rows=16, block_keys=16, variant=variant))


@pytest.mark.parametrize("h,g", [(2, 2), pytest.param(4, 2, marks=pytest.mark.slow), (8, 1)])
def test_gqa_ratios(h, g):
  rng = np.random.default_rng()
  q, k, v = qkv(rng, 1, 24, 24, h, g, 8)
  seg, pos = packed_rows(rng, 1, 24)
  check(q, k, v, (seg, pos, seg, pos), kernel_kw=dict(causal=True, block_rows=16, block_keys=8))


@pytest.mark.parametrize("variant", ["mosaic", "triton"])
def test_cross_attention_interleaved_orders(variant):
  rng = np.random.default_rng()
  q, k, v = qkv(rng, 2, 12, 28, 4, 2, 8)       # L != S, no causal promise
  check(q, k, v, interleaved(rng, 2, 12, 28),
        kernel_kw=dict(block_rows=8, block_keys=8, variant=variant))


def test_fully_masked_rows_are_zero_with_finite_gradients():
  rng = np.random.default_rng()
  q, k, v = qkv(rng, 2, 16, 16, 2, 1, 8)
  seg = np.ones((2, 16), np.int32)
  seg[0, 10:] = 0                     # padding queries
  k_seg = seg.copy()
  k_seg[1, :] = 2                     # row 1: no key shares the queries' segment
  pos = jnp.asarray(np.tile(np.arange(16, dtype=np.int32), (2, 1)))
  masks = (jnp.asarray(seg), pos, jnp.asarray(k_seg), pos)
  got = check(q, k, v, masks, kernel_kw=dict(block_rows=8, block_keys=8))
  assert np.all(np.asarray(got)[0, 10:] == 0) and np.all(np.asarray(got)[1] == 0)


def test_bf16_inputs():
  rng = np.random.default_rng()
  q, k, v = qkv(rng, 1, 32, 32, 4, 2, 16, jnp.bfloat16)
  seg, pos = packed_rows(rng, 1, 32)
  check(q, k, v, (seg, pos, seg, pos), dtype=jnp.bfloat16,
        kernel_kw=dict(causal=True, block_rows=16, block_keys=16))


@pytest.mark.parametrize("variant", [pytest.param("mosaic", marks=pytest.mark.slow), "triton"])
def test_softcap_and_sliding_window(variant):
  rng = np.random.default_rng()
  q, k, v = qkv(rng, 1, 32, 32, 2, 1, 8)
  q = q * 4                                    # large logits, so the cap matters
  seg, pos = packed_rows(rng, 1, 32, ragged=False)
  both = dict(softcap=5.0, window=6)
  check(q, k, v, (seg, pos, seg, pos), kernel_kw=dict(causal=True, block_rows=8, block_keys=8,
                                                        variant=variant, **both), ref_kw=both)


def test_skipped_tiles_are_never_read():
  # Keys of another segment hold NaN. Any computed tile touching them would turn the output NaN
  # (0 * NaN in p @ v), so a finite, exact result shows the table skipped those tiles.
  rng = np.random.default_rng()
  q, k, v = qkv(rng, 1, 16, 32, 2, 2, 8)
  k_seg = np.ones((1, 32), np.int32)
  k_seg[:, 16:] = 2
  k = k.at[:, 16:].set(jnp.nan)
  v = v.at[:, 16:].set(jnp.nan)
  order = jnp.zeros((1, 32), jnp.int32)
  masks = (jnp.ones((1, 16), jnp.int32), order[:, :16], jnp.asarray(k_seg), order)
  for variant in ("mosaic", "triton"):
    got = flash.attention(q, k, v, *masks, block_rows=8, block_keys=8, variant=variant)
    want = reference.attention(q, k[:, :16], v[:, :16], *masks[:2], masks[2][:, :16], order[:, :16])
    np.testing.assert_allclose(got, want, atol=2e-5, rtol=2e-5)


def test_causal_promise_skips_by_index():
  # With the promise broken (every key visible by order), the index-based skip drops keys after
  # each row's position: this shows the kernel does not compute those tiles.
  rng = np.random.default_rng()
  q, k, v = qkv(rng, 1, 32, 32, 2, 2, 8)
  one, zero = jnp.ones((1, 32), jnp.int32), jnp.zeros((1, 32), jnp.int32)
  dense = flash.attention(q, k, v, one, zero, one, zero, block_rows=8, block_keys=8)
  skipped = flash.attention(q, k, v, one, zero, one, zero, causal=True, block_rows=8, block_keys=8)
  np.testing.assert_allclose(dense, reference.attention(q, k, v, one, zero, one, zero), atol=2e-5)
  assert not np.allclose(skipped, dense, atol=1e-3)
  np.testing.assert_allclose(skipped[:, 28:], dense[:, 28:], atol=2e-5)   # last block sees all


def test_block_table_and_ranges():
  seg = jnp.asarray([[1, 1, 1, 1, 2, 2, 0, 0]], jnp.int32)
  pos = jnp.asarray([[0, 1, 2, 3, 0, 1, 0, 0]], jnp.int32)
  table = flash_tiles.block_table(seg, pos, 2)
  np.testing.assert_array_equal(table[0, 0], [1, 1, 1, 0, 1])
  assert table[0, 3, flash_tiles.SEG_MAX] == 0                     # an all-padding block
  k_range, q_range = flash_tiles.block_ranges(table, table, window=None, block_rows=2,
                                              block_keys=2, heads_per_row=None)
  np.testing.assert_array_equal(k_range[0], [[0, 0], [0, 1], [2, 2], [4, -1]])
  np.testing.assert_array_equal(q_range[0], [[0, 1], [1, 1], [2, 2], [4, -1]])
  entry = lambda i: tuple(table[0, i])
  assert flash_tiles.tile_status(entry(1), entry(0), window=None) == flash_tiles.FULL
  assert flash_tiles.tile_status(entry(0), entry(1), window=None) == flash_tiles.SKIP  # later keys
  assert flash_tiles.tile_status(entry(1), entry(1), window=None) == flash_tiles.PARTIAL
  assert flash_tiles.tile_status(entry(1), entry(0), window=2) == flash_tiles.PARTIAL
