"""The train loop: an interrupted-and-resumed run equals an uninterrupted one, bit for bit."""
import os

import jax
import numpy as np
import pytest

from slm_jax import configuration
from slm_jax.train import loop

PARAMS = [
    "ModelConfig.num_layers = 1", "ModelConfig.embed_dim = 32", "ModelConfig.mlp_dim = 64",
    "ModelConfig.head_dim = 8", "ModelConfig.vocab_pad_multiple = 8",
    "UnifiedVocab.text_size = 64", "UnifiedVocab.speech_codebook_sizes = (32,)",
    "SyntheticTask.max_len = 6", "make_mesh.ici_shape = {'data': 2, 'fsdp': -1}",
    "TOTAL_STEPS = 6", "BATCH_SIZE = 8", "SEQ_LEN = 32", "train.eval_every = 0",
    "CheckpointOptions.save_every = 2", "learning_rate_schedule.warmup_steps = 2",
    "learning_rate_schedule.peak_learning_rate = 1e-2",
]


def _train(workdir, extra=(), **kw):
  configuration.parse(["models/tiny.gin", "runs/pretrain.gin"], PARAMS + list(extra), finalize=False)
  return loop.train(str(workdir), progress=False, **kw)


def test_interrupted_run_resumes_bitwise(tmp_path):
  full = _train(tmp_path / "full", ["train.profile_steps = (2, 3)"])
  losses = [h["loss"] for h in full["history"]]
  assert [h["step"] for h in full["history"]] == list(range(1, 7))
  assert losses[-1] < losses[0]
  assert os.path.exists(tmp_path / "full" / "operative_config.gin")
  assert os.path.exists(tmp_path / "full" / "vocab_spec.json")
  traces = [f for _, _, fs in os.walk(tmp_path / "full" / "profile") for f in fs]
  assert any(f.endswith((".xplane.pb", ".trace.json.gz")) for f in traces), traces

  first = _train(tmp_path / "cut", stop_after_steps=3)      # "killed" after step 3, saved at 2
  assert first["stopped_at"] == 3
  second = _train(tmp_path / "cut")
  assert [h["step"] for h in second["history"]] == [3, 4, 5, 6]
  assert [h["loss"] for h in second["history"]] == losses[2:]      # bitwise
  jax.tree.map(np.testing.assert_array_equal, jax.device_get(second["state"].params),
               jax.device_get(full["state"].params))
  # rerunning a finished run does nothing
  again = _train(tmp_path / "cut")
  assert again["history"] == []


def test_nonfinite_run_stops_with_a_clear_message(tmp_path):
  with pytest.raises(loop.NonFiniteError, match=r"step 2: .*2 steps in a row.*learning rate"):
    _train(tmp_path, ["learning_rate_schedule.peak_learning_rate = 1e30",
                      "learning_rate_schedule.warmup_steps = 0", "OptimizerOptions.clip_norm = None",
                      "train.max_nonfinite_in_row = 2", "ModelConfig.init_std = 1e30"])
