"""Speech-channel heads evaluated only at speech targets (LossOptions.channel_head_capacity)."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from model_testing import K8, make, random_batch, tiny
from slm_jax.configuration import ConfigError
from slm_jax.models import loss as loss_lib


@pytest.fixture(scope="module")
def setup():
  cfg = tiny(speech_codebook_sizes=K8)     # K = 8, extra codebooks of different sizes
  model = make(cfg)
  # about 30% of positions hold speech targets (x 0.8 weighted)
  batch = random_batch(cfg, seed=5, b=4, l=32, speech_fraction=0.3)
  return cfg, model, batch


def _loss_and_grads(model, batch, capacity, chunk_size=64):
  graphdef, state = nnx.split(model)
  options = loss_lib.LossOptions(chunk_size=chunk_size, channel_head_capacity=capacity)

  def f(state):
    loss, sums = loss_lib.lm_loss(nnx.merge(graphdef, state), batch, options)
    return loss, sums

  (loss, sums), grads = jax.jit(jax.value_and_grad(f, has_aux=True))(state)
  return loss, sums, grads


@pytest.mark.parametrize("capacity", [0.5, 0.05, 1.0])
def test_same_loss_and_gradients_as_dense_heads(setup, capacity):
  """0.5: every chunk fits (gathered); 0.05: chunks overflow (the dense fallback); 1.0: dense."""
  _, model, batch = setup
  ref_loss, ref_sums, ref_grads = _loss_and_grads(model, batch, None)
  loss, sums, grads = _loss_and_grads(model, batch, capacity)
  np.testing.assert_allclose(float(loss), float(ref_loss), rtol=1e-6)
  np.testing.assert_allclose(np.asarray(sums["channel_ce"]), np.asarray(ref_sums["channel_ce"]),
                             rtol=1e-5)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-4,
                                                       atol=1e-7), grads, ref_grads)


def test_gathered_path_is_taken_and_fallback_keeps_every_target(setup):
  """Speech targets at the gathered slots' capacity exactly, then one more: both equal dense."""
  cfg, model, _ = setup
  hidden = jax.random.normal(jax.random.key(1), (2, 8, cfg.embed_dim))
  codes = jax.random.randint(jax.random.key(2), (2, 8, len(K8) - 1), 0, min(K8[1:]))
  for targets in (4, 5):   # capacity 0.25 of 16 positions = 4 slots
    w = np.zeros((2, 8), np.float32)
    w.flat[np.random.default_rng(targets).choice(16, targets, replace=False)] = 1.0
    frame = jnp.concatenate([jnp.zeros((2, 8, 1), jnp.int32), codes], -1)   # channel 0, then 1..K-1
    dense = loss_lib._dense_channel_ce(model.heads, hidden, frame, jnp.asarray(w))
    got = jax.jit(lambda h, c, w: loss_lib._channel_ce_sums(model.heads, h, c, w, 0.25))(
        hidden, frame, jnp.asarray(w))
    np.testing.assert_allclose(np.asarray(got), np.asarray(dense), rtol=1e-6)


def test_gathered_path_skips_non_speech_positions(setup):
  """Garbage hidden states at positions without a speech target never reach the loss."""
  cfg, model, _ = setup
  h = jax.random.normal(jax.random.key(3), (2, 8, cfg.embed_dim))
  codes = jax.random.randint(jax.random.key(4), (2, 8, len(K8)), 0, min(K8[1:]))   # K channels
  w = jnp.asarray(np.tile([1, 0, 0, 1, 0, 0, 0, 0], (2, 1)), jnp.float32)
  bad = jnp.where(w[..., None] > 0, h, jnp.nan)
  got = loss_lib._channel_ce_sums(model.heads, bad, codes, w, 0.5)
  assert np.isfinite(np.asarray(got)).all()
  np.testing.assert_allclose(np.asarray(got),
                             np.asarray(loss_lib._dense_channel_ce(model.heads, h, codes, w)),
                             rtol=1e-6)


def test_sharded_batch_gathers_within_each_shard(setup):
  """Rows sharded 8 ways: each shard gathers its own positions; no all-gather, same sums."""
  from jax.sharding import Mesh, NamedSharding, PartitionSpec as P  # pylint: disable=import-outside-toplevel
  from slm_jax import sharding  # pylint: disable=import-outside-toplevel
  cfg, model, _ = setup
  big = random_batch(cfg, seed=3, b=8, l=64, speech_fraction=0.3)
  h = jax.random.normal(jax.random.key(0), (8, 64, cfg.embed_dim), jnp.float32)
  mesh = Mesh(np.array(jax.devices()[:8]).reshape(8, 1, 1, 1), sharding.MESH_AXES)
  put = lambda x: jax.device_put(x, NamedSharding(mesh, P("data", *([None] * (x.ndim - 1)))))
  keys = ("targets", "loss_weights", "target_speech_codes")
  sub = {k: put(big[k]) for k in keys}

  def f(h, s):
    with sharding.activation_sharding(mesh):
      assert sharding.batch_shards() == 8
      return loss_lib.loss_sums(model, h, s, chunk_size=128, channel_head_capacity=0.6)

  f = jax.jit(f)
  hlo = f.lower(put(h), sub).compile().as_text()
  assert "all-gather" not in hlo, "the gathered channel heads moved positions between shards"
  ref = loss_lib.loss_sums(model, h, {k: big[k] for k in keys}, chunk_size=8 * 64)
  np.testing.assert_allclose(np.asarray(f(put(h), sub)["channel_ce"]),
                             np.asarray(ref["channel_ce"]), rtol=1e-5)


def test_capacity_out_of_range_is_a_config_error():
  for bad in (0.0, 1.5, -0.1):
    with pytest.raises(ConfigError, match="channel_head_capacity"):
      loss_lib.LossOptions(channel_head_capacity=bad)


def test_zipper_heads_same_loss_and_gradients():
  """The Zipper's hidden states are a pytree of both towers: gathered the same way."""
  from zipper_testing import randomize, tiny_zipper, zipper_batch  # pylint: disable=import-outside-toplevel
  cfg = tiny_zipper()
  model = randomize(make(cfg))
  batch = zipper_batch(cfg, seed=2, b=2, l=32)
  ref_loss, ref_sums, ref_grads = _loss_and_grads(model, batch, None)
  loss, sums, grads = _loss_and_grads(model, batch, 0.7)
  np.testing.assert_allclose(float(loss), float(ref_loss), rtol=1e-6)
  np.testing.assert_allclose(np.asarray(sums["channel_ce"]), np.asarray(ref_sums["channel_ce"]),
                             rtol=1e-5)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-4,
                                                       atol=1e-7), grads, ref_grads)
