"""The kernels behind dispatch: `pallas` in the whole model (unsharded and on 8 devices), `splash`
and `cudnn` against the reference, each refusing the cases that are not theirs."""
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import NamedSharding, PartitionSpec as P

from slm_jax import sharding
from slm_jax.kernels import dispatch, library, reference
from slm_jax.kernels.flash import KernelUnsupportedError
from test_blockwise import packed_rows
from test_flash import qkv


def _model_and_batch(impl, b=2, l=64):
  from flax import nnx  # pylint: disable=import-outside-toplevel
  from slm_jax.models import build, config  # pylint: disable=import-outside-toplevel
  from slm_jax.unified_vocab import UnifiedVocab  # pylint: disable=import-outside-toplevel
  cfg = config.ModelConfig(vocab=UnifiedVocab(text_size=64, speech_codebook_sizes=(32,)),
                           num_layers=2, embed_dim=32, num_heads=4, num_kv_heads=2, head_dim=8,
                           mlp_dim=64, vocab_pad_multiple=8, attention_impl=impl)
  rng = np.random.default_rng(7)
  seg, pos = packed_rows(rng, b, l)
  ids = jnp.asarray(rng.integers(3, cfg.vocab.size, size=(b, l + 1)), jnp.int32)
  batch = {"tokens": ids[:, :-1], "targets": ids[:, 1:], "segment_ids": seg, "positions": pos,
           "loss_weights": (seg > 0).astype(jnp.float32)}
  graphdef, params = nnx.split(build.build(cfg), nnx.Param)
  return graphdef, params, batch


def _loss_fn(graphdef):
  from flax import nnx  # pylint: disable=import-outside-toplevel
  from slm_jax.models import loss  # pylint: disable=import-outside-toplevel
  options = loss.LossOptions(chunk_size=64, remat=False)
  return lambda p, batch: loss.lm_loss(nnx.merge(graphdef, p), batch, options)[0]


def _assert_same(got, want):
  (l1, g1), (l0, g0) = got, want
  np.testing.assert_allclose(l1, l0, rtol=1e-5)
  for a, b in zip(jax.tree.leaves(g1), jax.tree.leaves(g0)):
    np.testing.assert_allclose(a, b, atol=1e-6, rtol=1e-4)


@pytest.fixture(scope="module")
def xla_loss_and_grads():
  graphdef, params, batch = _model_and_batch("xla")
  return jax.jit(jax.value_and_grad(_loss_fn(graphdef)))(params, batch)


def test_model_with_pallas_equals_xla(xla_loss_and_grads):
  graphdef, params, batch = _model_and_batch("pallas")
  _assert_same(jax.jit(jax.value_and_grad(_loss_fn(graphdef)))(params, batch), xla_loss_and_grads)


def test_model_with_pallas_on_eight_devices_equals_xla(xla_loss_and_grads):
  # data x fsdp x tensor = 2 x 2 x 2: the kernel runs per (batch, kv head) shard under shard_map.
  mesh = sharding.make_mesh({"data": 2, "fsdp": 2, "tensor": 2}, devices=jax.devices()[:8])
  graphdef, params, batch = _model_and_batch("pallas", b=4)
  _, _, batch2 = _model_and_batch("xla", b=4)
  rules = sharding.logical_axis_rules()
  params = jax.device_put(params, sharding.state_shardings(params, mesh, rules))
  batch = jax.device_put(batch, NamedSharding(mesh, P(("data", "fsdp"))))

  def step(p, batch):
    with sharding.activation_sharding(mesh, rules):
      return jax.value_and_grad(_loss_fn(graphdef))(p, batch)

  assert "shard_map" in str(jax.make_jaxpr(step)(params, batch))
  want = jax.jit(jax.value_and_grad(_loss_fn(graphdef)))(jax.device_get(params), batch2)
  _assert_same(jax.jit(step)(params, batch), want)


def test_splash_equals_reference_and_refuses_cross_attention():
  rng = np.random.default_rng()
  q, k, v = qkv(rng, 2, 24, 24, 4, 2, 8)     # 24 is not a multiple of the block: padded inside
  seg, pos = packed_rows(rng, 2, 24)
  splash = functools.partial(dispatch.attention, implementation="splash", causal=True)
  got = jax.jit(lambda q, k, v: splash(q, k, v, seg, pos, seg, pos))(q, k, v)
  np.testing.assert_allclose(got, reference.attention(q, k, v, seg, pos, seg, pos), atol=2e-5,
                             rtol=2e-5)
  w = jax.random.normal(jax.random.key(2), q.shape)
  grads = [jax.jit(jax.grad(lambda q, k, v, fn=fn: jnp.sum(fn(q, k, v, seg, pos, seg, pos) * w),
                            argnums=(0, 1, 2)))(q, k, v) for fn in (splash, reference.attention)]
  for a, b in zip(*grads):
    np.testing.assert_allclose(a, b, atol=5e-5, rtol=5e-5)
  with pytest.raises(KernelUnsupportedError, match="packed causal self-attention"):
    dispatch.attention(q, k[:, :16], v[:, :16], seg, pos, seg[:, :16], pos[:, :16],
                       implementation="splash", causal=True)


def test_cudnn_takes_unpacked_rows_and_refuses_packed_ones():
  rng = np.random.default_rng()
  q, k, v = qkv(rng, 2, 16, 16, 4, 2, 8)
  lengths = np.array([16, 11])
  seg = jnp.asarray((np.arange(16)[None] < lengths[:, None]).astype(np.int32))
  pos = jnp.asarray(np.tile(np.arange(16, dtype=np.int32), (2, 1)))
  cudnn = functools.partial(dispatch.attention, implementation="cudnn", causal=True)
  want = reference.attention(q, k, v, seg, pos, seg, pos)
  np.testing.assert_allclose(cudnn(q, k, v, seg, pos, seg, pos), want, atol=2e-5, rtol=2e-5)
  packed, packed_pos = packed_rows(rng, 2, 16)
  with pytest.raises(KernelUnsupportedError, match="no packed"):
    cudnn(q, k, v, packed, packed_pos, packed, packed_pos)
  # Under jit the check runs on device: packed rows go to our kernel, with the same result.
  got = jax.jit(lambda *a: cudnn(q, k, v, *a))(packed, packed_pos, packed, packed_pos)
  np.testing.assert_allclose(got, reference.attention(q, k, v, packed, packed_pos, packed,
                                                      packed_pos), atol=2e-5, rtol=2e-5)
  with pytest.raises(KernelUnsupportedError, match="unpacked rows only"):
    library.cudnn_attention(q, k, v, seg, pos, seg, pos, causal=False)
