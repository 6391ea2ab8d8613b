"""Factorized speech-channel embeddings (`ModelConfig.speech_embed_rank`)."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from jax.sharding import PartitionSpec as P

from model_testing import flat, loss_and_grads, make, random_batch, tiny
from slm_jax import sharding
from slm_jax.configuration import ConfigError
from slm_jax.models import build
from slm_jax.models.towers import SpeechChannelEmbedding

DMEL = (16,) * 24          # dMel-like: 24 channels of 16 levels (23 extra channels)
UNEVEN = (24, 16, 8, 16)   # channels 1..3 of different sizes


@pytest.mark.parametrize("sizes", [DMEL, UNEVEN], ids=["dmel", "uneven"])
def test_rank_c_with_one_hot_features_equals_the_full_tables(sizes):
  """Features = the one-hot of each code, projection = the full table's rows: the same sum."""
  full_cfg = tiny(speech_codebook_sizes=sizes)
  c = max(sizes[1:])
  fac_cfg = full_cfg.replace(speech_embed_rank=c)
  full = SpeechChannelEmbedding(full_cfg, rngs=nnx.Rngs(0))
  fac = SpeechChannelEmbedding(fac_cfg, rngs=nnx.Rngs(1))
  table_ND = np.asarray(full.table.get_value())
  extra = sizes[1:]
  features = np.zeros((sum(extra), c), np.float32)
  projection = np.zeros((len(extra) * c, full_cfg.embed_dim), np.float32)
  for k, (offset, size) in enumerate(zip(full.offsets, extra)):
    features[offset:offset + size, :size] = np.eye(size)
    projection[k * c:k * c + size] = table_ND[offset:offset + size]
  fac.features.set_value(jnp.asarray(features))
  fac.projection.set_value(jnp.asarray(projection))
  rng = np.random.default_rng(0)
  codes_BLK = jnp.asarray(np.stack([rng.integers(0, s, (3, 5)) for s in extra], -1), jnp.int32)
  np.testing.assert_allclose(np.asarray(fac(codes_BLK)), np.asarray(full(codes_BLK)),
                             rtol=1e-5, atol=1e-6)


def test_factorized_parameters_and_init_scale():
  cfg = tiny(speech_codebook_sizes=DMEL, speech_embed_rank=4)
  emb = SpeechChannelEmbedding(cfg, rngs=nnx.Rngs(0))
  assert emb.features.get_value().shape == (23 * 16, 4)
  assert emb.projection.get_value().shape == (23 * 4, cfg.embed_dim)
  assert not hasattr(emb, "table")
  # the summed embedding has the full tables' scale: init_std x sqrt(K - 1)
  codes = jnp.asarray(np.random.default_rng(1).integers(0, 16, (64, 8, 23)), jnp.int32)
  std = float(np.asarray(emb(codes)).std())
  assert 0.6 < std / (cfg.init_std * np.sqrt(23)) < 1.5


def test_factorized_model_trains_and_changes_speech_positions_only():
  cfg = tiny(speech_codebook_sizes=DMEL, speech_embed_rank=4)
  model = make(cfg)
  batch = random_batch(cfg, seed=3)
  (loss, sums), grads = loss_and_grads(model, batch)
  assert np.isfinite(float(loss)) and "channel_ce" in sums
  g = flat(grads)
  for name in ("features", "projection"):
    path = next(p for p in g if "speech_channels" in p and name in p)
    assert np.isfinite(g[path]).all() and np.abs(g[path]).max() > 0, path
  x0 = model.towers(batch["tokens"], batch["segment_ids"], batch["positions"], batch["speech_codes"])
  x1 = model.towers(batch["tokens"], batch["segment_ids"], batch["positions"],
                    (batch["speech_codes"] + 1) % 16)
  speech = np.asarray(cfg.vocab.is_speech(batch["tokens"]))
  diff = np.abs(np.asarray(x0 - x1)).max(-1)
  assert (diff[~speech] == 0).all() and (diff[speech] > 0).all()


def test_factorized_parameters_shard_by_their_logical_axes_and_match_unsharded():
  cfg = tiny(speech_codebook_sizes=DMEL, speech_embed_rank=4, embed_dim=32)
  model = make(cfg)
  graphdef, params = nnx.split(model, nnx.Param)
  mesh = sharding.make_mesh({"fsdp": 4, "tensor": 2})
  shardings = sharding.state_shardings(params, mesh)
  spec = shardings.to_pure_dict()["towers"]["speech_channels"]
  assert spec["projection"].spec == P(None, "fsdp")
  assert spec["features"].spec == P(None, None)
  batch = random_batch(cfg, seed=5)
  codes = jnp.asarray(batch["speech_codes"])

  def embed(p):
    return nnx.merge(graphdef, p).towers.speech_channels(codes)

  sharded = jax.jit(embed)(jax.device_put(params, shardings))
  np.testing.assert_allclose(np.asarray(sharded), np.asarray(embed(params)), rtol=1e-5, atol=1e-6)


def test_negative_rank_is_a_config_error():
  with pytest.raises(ConfigError, match="speech_embed_rank"):
    tiny(speech_codebook_sizes=DMEL, speech_embed_rank=-1)


def test_rank_is_kept_in_the_built_config():
  cfg = tiny(speech_codebook_sizes=DMEL, speech_embed_rank=4)
  assert build.build_abstract(cfg).cfg.speech_embed_rank == 4
