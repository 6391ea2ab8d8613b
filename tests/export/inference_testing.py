"""A tiny training run written in-process: a gin-bound model's train state (steps=0: the initial
one, which skips compiling a train step) saved the way slm-train saves it."""
import os

import jax
import numpy as np

from slm_jax import configuration, sharding
from slm_jax.data import batch as data_lib
from slm_jax.data import synthetic
from slm_jax.models import build
from slm_jax.train import checkpoint as ckpt_lib
from slm_jax.train import loop

BATCH, SEQ = 8, 32
TINY = [
    "ModelConfig.num_layers=2", "ModelConfig.embed_dim=32", "ModelConfig.mlp_dim=64",
    "ModelConfig.num_heads=4", "ModelConfig.num_kv_heads=2", "ModelConfig.head_dim=8",
    "ModelConfig.vocab_pad_multiple=8", "ModelConfig.init_std=0.2",
    "ModelConfig.attention_impl='xla'", "UnifiedVocab.text_size=64",
    "UnifiedVocab.speech_codebook_sizes=(32,)", "SyntheticTask.max_len=6",
    "learning_rate_schedule.warmup_steps=1", "learning_rate_schedule.peak_learning_rate=1e-2",
]


def mesh_of(shape: dict):
  n = int(np.prod(list(shape.values())))
  return sharding.make_mesh(shape, devices=jax.devices()[:n])


def batches(cfg, mesh, n=1, split="train", seed=0):
  shard = data_lib.host_shard(mesh, BATCH, SEQ)
  it = synthetic.SyntheticTask(split=split, batch_size=BATCH, seq_len=SEQ, vocab=cfg.vocab,
                               shard=shard, seed=seed, max_len=6)
  return [data_lib.global_batch(next(it), mesh, BATCH) for _ in range(n)]


def train_workdir(workdir: str, steps: int = 0, mesh_shape=None):
  """Trains the tiny model `steps` steps on `mesh_shape` (fsdp over 8) and saves a checkpoint
  the way slm-train does; returns (cfg, params on the host, the run)."""
  configuration.parse([], TINY, finalize=False)
  cfg = build.config_from_gin()            # through gin, so the operative config binds it
  run = loop.TrainRun(cfg, mesh=mesh_of(mesh_shape or {"fsdp": 8}))
  state = run.init_state()
  for batch in batches(cfg, run.mesh, steps):
    state, _ = run.train_step(state, batch)
  configuration.write_operative_config(workdir)
  cfg.vocab.save(workdir)
  ckpt = ckpt_lib.Checkpointer(os.path.join(workdir, "checkpoints"),
                               ckpt_lib.CheckpointOptions(save_every=1, async_save=False))
  ckpt.save(max(steps, 1), state, {"step": steps}, cfg.vocab)
  ckpt.close()
  return cfg, jax.device_get(state.params), run
