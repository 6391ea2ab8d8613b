"""Shared fixtures for the train tests: a one-layer tiny model and synthetic batches on any mesh."""
import jax
import pytest

from slm_jax import sharding
from slm_jax.unified_vocab import UnifiedVocab
from slm_jax.models.config import ModelConfig
from slm_jax.data import batch as data_lib
from slm_jax.data import synthetic

BATCH, SEQ = 8, 32


def tiny_config(**overrides) -> ModelConfig:
  base = dict(vocab=UnifiedVocab(text_size=64, speech_codebook_sizes=(32,)), num_layers=1,
              embed_dim=32, num_heads=4, num_kv_heads=2, head_dim=8, mlp_dim=64,
              vocab_pad_multiple=8)
  base.update(overrides)
  return ModelConfig(**base)


def mesh_of(shape: dict):
  n = 1
  for v in shape.values():
    n *= v
  return sharding.make_mesh(shape, devices=jax.devices()[:n])


def batches(cfg, mesh, n=1, batch=BATCH, seq=SEQ, split="train", seed=0):
  shard = data_lib.host_shard(mesh, batch, seq)
  it = synthetic.SyntheticTask(split=split, batch_size=batch, seq_len=seq, vocab=cfg.vocab,
                               shard=shard, seed=seed, max_len=6)
  return [data_lib.global_batch(next(it), mesh, batch) for _ in range(n)]


@pytest.fixture
def cfg():
  return tiny_config()
