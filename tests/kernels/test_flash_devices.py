"""Our kernels compiled for real devices (Triton on GPU, Mosaic on TPU) equal the reference.

Interpret mode on CPU checks the numbers of the kernel programs, not their lowering: these tests
compile them (`interpret=False`) at sizes on the hardware tilings, forward and gradients in bf16.
Skipped unless the backend is there (markers in setup.cfg, gating in tests/conftest.py).
"""
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from slm_jax.kernels import cached, decode, dispatch, flash, reference
from test_blockwise import packed_rows
from test_flash import interleaved, qkv


def _compare(ours, q, k, v, masks, **ref_kw):
  w = jax.random.normal(jax.random.key(0), q.shape, jnp.float32)

  def loss(fn, q, k, v):
    return jnp.sum(fn(q, k, v, *masks).astype(jnp.float32) * w)

  f32 = [x.astype(jnp.float32) for x in (q, k, v)]
  ref = functools.partial(reference.attention, **ref_kw)
  got = jax.jit(lambda q, k, v: ours(q, k, v, *masks))(q, k, v)
  np.testing.assert_allclose(np.asarray(got, np.float32), ref(*f32, *masks), atol=3e-2, rtol=3e-2)
  got_g = jax.jit(jax.grad(functools.partial(loss, ours), argnums=(0, 1, 2)))(q, k, v)
  want_g = jax.grad(functools.partial(loss, ref), argnums=(0, 1, 2))(*f32)
  for a, b in zip(got_g, want_g):
    scale = float(np.abs(b).max())
    np.testing.assert_allclose(np.asarray(a, np.float32) / scale, np.asarray(b) / scale, atol=3e-2)


def _cases(variant):
  rng = np.random.default_rng(0)
  q, k, v = qkv(rng, 2, 1000, 1000, 8, 2, 128, jnp.bfloat16)   # ragged: padded inside
  seg, pos = packed_rows(rng, 2, 1000)
  kw = dict(variant=variant, interpret=False)
  _compare(functools.partial(flash.attention, causal=True, **kw), q, k, v, (seg, pos, seg, pos))
  _compare(functools.partial(flash.attention, causal=True, softcap=30.0, window=256, **kw),
           q, k, v, (seg, pos, seg, pos), softcap=30.0, window=256)
  q, k, v = qkv(rng, 2, 384, 640, 8, 1, 64, jnp.bfloat16)
  _compare(functools.partial(flash.attention, **kw), q, k, v, interleaved(rng, 2, 384, 640))


@pytest.mark.gpu
def test_triton_kernels_on_gpu():
  _cases("triton")


@pytest.mark.tpu
def test_mosaic_kernels_on_tpu():
  _cases("mosaic")


@pytest.mark.tpu
def test_splash_on_tpu():
  rng = np.random.default_rng(1)
  q, k, v = qkv(rng, 2, 1024, 1024, 8, 2, 128, jnp.bfloat16)
  seg, pos = packed_rows(rng, 2, 1024)
  _compare(functools.partial(dispatch.attention, implementation="splash", causal=True), q, k, v,
           (seg, pos, seg, pos))


@pytest.mark.gpu
def test_cudnn_and_decode_kernel_on_gpu():
  rng = np.random.default_rng(2)
  q, k, v = qkv(rng, 2, 512, 512, 8, 2, 128, jnp.bfloat16)
  lengths = np.array([512, 300])
  seg = jnp.asarray((np.arange(512)[None] < lengths[:, None]).astype(np.int32))
  pos = jnp.asarray(np.tile(np.arange(512, dtype=np.int32), (2, 1)))
  _compare(functools.partial(dispatch.attention, implementation="cudnn", causal=True), q, k, v,
           (seg, pos, seg, pos))
  b, g, s, e = 4, 2, 1024, 128
  ks = jax.random.split(jax.random.key(3), 5)
  q1 = jax.random.normal(ks[0], (b, 1, 8, e), jnp.bfloat16)
  k_new, v_new = (jax.random.normal(x, (b, 1, g, e), jnp.bfloat16) for x in ks[1:3])
  k_cache, v_cache = (jax.random.normal(x, (b, g, s, e), jnp.bfloat16) for x in ks[3:5])
  filled = np.array([1000, 0, 17, 512])
  cache_seg = jnp.asarray((np.arange(s)[None] < filled[:, None]).astype(np.int32))
  cache_order = jnp.asarray(np.tile(np.arange(s, dtype=np.int32), (b, 1)))
  args = (q1, k_new, v_new, jnp.ones((b, 1), jnp.int32), jnp.asarray(filled[:, None], jnp.int32),
          k_cache, v_cache, cache_seg, cache_order)
  got = jax.jit(lambda *a: decode.attention(*a, use_gqa=True, interpret=False))(*args)
  want = cached.reference(*[x.astype(jnp.float32) if x.dtype == jnp.bfloat16 else x for x in args])
  np.testing.assert_allclose(np.asarray(got, np.float32), want, atol=3e-2, rtol=3e-2)
