"""Attention over a cache plus new keys (one joint softmax) equals the reference over both."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from slm_jax.kernels import cached


@pytest.mark.parametrize("l", [1, 5])
def test_matches_reference_over_concatenated_keys(l):
  b, h, g, e, s = 3, 4, 2, 8, 12
  ks = jax.random.split(jax.random.key(0), 5)
  q = jax.random.normal(ks[0], (b, l, h, e))
  k_new = jax.random.normal(ks[1], (b, l, g, e))
  v_new = jax.random.normal(ks[2], (b, l, g, e))
  k_cache = jax.random.normal(ks[3], (b, g, s, e))
  v_cache = jax.random.normal(ks[4], (b, g, s, e))
  filled = np.array([4, 0, 9])                              # row 1: nothing cached yet
  cache_seg = jnp.asarray((np.arange(s)[None] < filled[:, None]).astype(np.int32))
  cache_order = jnp.asarray(np.tile(np.arange(s), (b, 1)).astype(np.int32))
  q_order = jnp.asarray(filled[:, None] + np.arange(l)[None]).astype(jnp.int32)
  q_seg = jnp.ones((b, l), jnp.int32).at[2, -1].set(0)      # a padding query
  got = cached.attention(q, k_new, v_new, q_seg, q_order, k_cache, v_cache, cache_seg, cache_order)
  want = cached.reference(q, k_new, v_new, q_seg, q_order, k_cache, v_cache, cache_seg, cache_order)
  np.testing.assert_allclose(got, want, atol=2e-5, rtol=2e-5)
  assert np.all(np.asarray(got[2, -1]) == 0)                 # padding query -> zeros
