"""The decode step through kernels (ours, the GPU decode kernel in interpret mode) equals the XLA
reference over the cache plus the new keys."""
import jax
import numpy as np
import pytest

from slm_jax.kernels import cached, decode


def case(l, s=32, b=3, h=4, g=2, e=8):
  ks = jax.random.split(jax.random.key(np.random.default_rng().integers(1 << 30)), 5)
  q = jax.random.normal(ks[0], (b, l, h, e))
  k_new, v_new = jax.random.normal(ks[1], (b, l, g, e)), jax.random.normal(ks[2], (b, l, g, e))
  k_cache, v_cache = jax.random.normal(ks[3], (b, g, s, e)), jax.random.normal(ks[4], (b, g, s, e))
  filled = np.array([20, 0, 31])                            # row 1: nothing cached yet
  cache_seg = (np.arange(s)[None] < filled[:, None]).astype(np.int32)
  cache_order = np.tile(np.arange(s), (b, 1)).astype(np.int32)
  q_order = (filled[:, None] + np.arange(l)[None]).astype(np.int32)
  q_seg = np.ones((b, l), np.int32)
  q_seg[2, -1] = 0                                           # a padding query
  return q, k_new, v_new, q_seg, q_order, k_cache, v_cache, cache_seg, cache_order


@pytest.mark.parametrize("l,use_gqa", [(1, False), (3, False), (1, True)])
def test_decode_equals_reference(l, use_gqa):
  args = case(l)
  got = jax.jit(lambda *a: decode.attention(*a, use_gqa=use_gqa))(*args)
  want = cached.reference(*args)
  np.testing.assert_allclose(got, want, atol=2e-5, rtol=2e-5)
  assert np.all(np.asarray(got)[2, -1] == 0)


def test_gqa_falls_back_where_slots_are_not_contiguous():
  q, k_new, v_new, q_seg, q_order, k_cache, v_cache, cache_seg, cache_order = case(1)
  cache_seg = cache_seg.copy()
  cache_seg[0, 5:9] = 2                      # another document inside row 0's range
  args = (q, k_new, v_new, q_seg, q_order, k_cache, v_cache, cache_seg, cache_order)
  got = jax.jit(lambda *a: decode.attention(*a, use_gqa=True))(*args)
  np.testing.assert_allclose(got, cached.reference(*args), atol=2e-5, rtol=2e-5)
