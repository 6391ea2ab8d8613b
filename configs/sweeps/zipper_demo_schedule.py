"""Shared vs parameter-matched Zipper on the demo's full schedule (docs/ablations.md).

    slm-sweep --config configs/sweeps/zipper_demo_schedule.py --root runs/zipper_schedule [--corpus DIR]

configs/sweeps/zipper_demo.py compares seven rows at 120 steps, too short for any of them to
learn ASR. These three rows train what `make demo` trained when they were measured
(configs/runs/demo.gin at 960 steps of 8 x 256, pinned below: `make demo` trains 800 since
2026-12-01; the channel heads at speech targets only, the auxiliary CTC loss; no evaluation during
training, one checkpoint at the end), about 12-14 minutes each on 2 cores:

  shared_bidir      the demo's decoder (4 x 192, 3.76M parameters, bidirectional ASR prompts)
  zipper_128        text + speech towers of 4 x 128 (3.70M), cross-attention after every layer
  zipper_128_x2     the same with cross-attention after every 2 layers
"""
import importlib.util
import os

import ml_collections


def _load_zipper_demo():
  """The 120-step grid beside this file (its corpus bindings, evaluation and columns)."""
  path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "zipper_demo.py")
  spec = importlib.util.spec_from_file_location("zipper_demo_grid", path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


zipper_demo = _load_zipper_demo()

SCHEDULE = ["TOTAL_STEPS = 960", "train.periodic_evals = []", "train.eval_every = 0",
            "CheckpointOptions.save_every = 0", "CheckpointOptions.keep_last = 1"]


def get_config(corpus="data/demo_corpus"):
  c = ml_collections.ConfigDict()
  c.base_gin_files = ["runs/demo.gin"]
  c.base_gin_params = zipper_demo.CORPUS + zipper_demo.vocab_names(corpus) + SCHEDULE
  matched = ("ablations/zipper.gin", "ablations/zipper_towers_128.gin")
  c.axes = {"model": [
      {"name": "shared_bidir"},
      {"name": "zipper_128", "gin_files": list(matched)},
      {"name": "zipper_128_x2", "gin_files": [*matched, "ablations/zipper_cross_every_2.gin"]},
  ]}
  # As the short grid's evaluation, plus joint CTC/attention decoding (these models do listen).
  short = zipper_demo.get_config(corpus)
  c.eval_args = [a for a in short.eval_args if a != "--no_joint"]
  c.columns = list(short.columns) + ["asr/test/joint/cer", "asr/test/joint/wer"]
  return c
