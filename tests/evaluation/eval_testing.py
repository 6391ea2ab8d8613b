"""Test helpers: a tiny model trained in-process on hand-made sequences (one device)."""
import jax
import numpy as np

from slm_jax import configuration, sharding
from slm_jax.data import batch as data_lib
from slm_jax.models.config import ModelConfig
from slm_jax.train import loop
from slm_jax.unified_vocab import UnifiedVocab

TINY_GIN = ["learning_rate_schedule.warmup_steps=1", "learning_rate_schedule.peak_learning_rate=1e-2"]


def tiny_config(vocab: UnifiedVocab, **overrides) -> ModelConfig:
  base = dict(vocab=vocab, num_layers=2, embed_dim=32, num_heads=4, num_kv_heads=2, head_dim=8,
              mlp_dim=64, vocab_pad_multiple=8, attention_impl="xla")
  base.update(overrides)
  return ModelConfig(**base)


def row_batch(sequences, length: int) -> dict:
  """One document per row: the batch contract's keys (shift by one, weights on scored targets).

  sequences: (tokens int32[N], codes int32[N, K-1] or None, mask bool[N] of trained tokens)."""
  b = len(sequences)
  k_extra = next((c.shape[1] for _, c, _ in sequences if c is not None), 0)
  out = {k: np.zeros((b, length), np.int32) for k in ("tokens", "targets", "segment_ids",
                                                      "positions")}
  out["loss_weights"] = np.zeros((b, length), np.float32)
  if k_extra:
    out["speech_codes"] = np.zeros((b, length, k_extra), np.int32)
    out["target_speech_codes"] = np.zeros((b, length, k_extra), np.int32)
  for r, (tokens, codes, mask) in enumerate(sequences):
    n = tokens.size - 1
    assert n <= length, (n, length)
    out["tokens"][r, :n], out["targets"][r, :n] = tokens[:-1], tokens[1:]
    out["segment_ids"][r, :n], out["positions"][r, :n] = 1, np.arange(n)
    out["loss_weights"][r, :n] = mask[1:]
    if k_extra:
      out["speech_codes"][r, :n], out["target_speech_codes"][r, :n] = codes[:-1], codes[1:]
  return out


def train_on(cfg: ModelConfig, sequences, steps: int, length: int = 64, seed: int = 0):
  """Trains the tiny model on `sequences` (every row every step); returns the nnx model."""
  from flax import nnx  # pylint: disable=import-outside-toplevel
  configuration.parse([], TINY_GIN, finalize=False)
  mesh = sharding.make_mesh({"fsdp": 1}, devices=jax.devices()[:1])
  run = loop.TrainRun(cfg, mesh=mesh, seed=seed)
  state = run.init_state()
  local = row_batch(sequences, length)
  batch = data_lib.global_batch(local, mesh, len(sequences))
  for _ in range(steps):
    state, metrics = run.train_step(state, batch)
  model = nnx.merge(run.graphdef, jax.device_get(state.params))
  return model, float(metrics["loss"])
