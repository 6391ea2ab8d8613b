"""Shared decoder vs Zipper at about equal parameter count: train-step time, peak memory, decode.

  python bench/zipper.py                          # demo shapes (models/demo.gin's vocabulary)
  python bench/zipper.py --batch 4 --seq 128 --steps 3 --skip_decode
  python bench/zipper.py --skip_train             # decode tokens/s only

Shared: 6 layers x 256 (configs/models/demo.gin's shape); Zipper: configs/ablations/zipper.gin's
towers (4 + 4 layers x 192, cross-attention after every layer, `--cross_every` to change).
Rows mix ASR / TTS-like spans (both towers busy). Prints the parameter counts, the median
train-step time (AdamW, jitted, after warm-up; the two models' steps alternate, and the ratio is
the median of the per-round ratios, so that other load on the machine reaches both alike), the
compiled step's peak memory
(memory_analysis: arguments + outputs + temporaries), and greedy decode tokens/s of the engine
(median of alternating rounds, the ratio the median of the per-round ratios).
"""
from __future__ import annotations

import argparse
import os
import platform
import statistics
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import optax  # noqa: E402
from flax import nnx  # noqa: E402

from slm_jax.inference.engine import Engine  # noqa: E402
from slm_jax.models import loss as loss_lib  # noqa: E402
from slm_jax.models.build import build, param_count  # noqa: E402
from slm_jax.models.config import ModelConfig  # noqa: E402
from slm_jax.models.zipper_config import TowerConfig  # noqa: E402
from slm_jax.train import optimizer as opt_lib  # noqa: E402
from slm_jax.train.state import TrainState  # noqa: E402
from slm_jax.train.step import make_train_step  # noqa: E402
from slm_jax.unified_vocab import BOS_ID, UnifiedVocab  # noqa: E402


def configs(cross_every: int, impl: str):
  vocab = UnifiedVocab(text_size=512, speech_codebook_sizes=(16,) * 80)
  common = dict(vocab=vocab, remat_policy="save_dots", attention_impl=impl)
  shared = ModelConfig(num_layers=6, embed_dim=256, num_heads=4, num_kv_heads=2, head_dim=64,
                       mlp_dim=768, **common)
  tower = TowerConfig(4, 192, 4, 2, 48, 576, cross_every, True)
  zipper = ModelConfig(architecture="zipper", zipper_text=tower, zipper_speech=tower, **common)
  return {"shared": shared, "zipper": zipper}


def batch(vocab, b, l, seed=0):
  """Rows of ASR-like and TTS-like documents: [SPEECH] frames [TEXT] words, and the reverse."""
  rng = np.random.default_rng(seed)
  tokens = np.zeros((b, l + 1), np.int32)
  for r in range(b):
    seq = [BOS_ID]
    while len(seq) < l + 1:
      speech = rng.integers(vocab.speech_start, vocab.size, rng.integers(20, 60)).tolist()
      text = rng.integers(vocab.text_start, vocab.speech_start, rng.integers(5, 15)).tolist()
      sp, tx = [vocab.special_id("[SPEECH]")] + speech, [vocab.special_id("[TEXT]")] + text
      seq += sp + tx if rng.random() < 0.5 else tx + sp
    tokens[r] = seq[:l + 1]
  codes = rng.integers(0, 16, (b, l + 1, vocab.num_channels - 1)).astype(np.int32)
  return {"tokens": tokens[:, :-1], "targets": tokens[:, 1:], "segment_ids": np.ones((b, l), np.int32),
          "positions": np.tile(np.arange(l, dtype=np.int32), (b, 1)),
          "loss_weights": np.ones((b, l), np.float32), "speech_codes": codes[:, :-1],
          "target_speech_codes": codes[:, 1:]}


def train_step(cfg, data):
  """(parameter count, a function running one step and returning its seconds, peak bytes, model)."""
  model = build(cfg)
  graphdef, params = nnx.split(model, nnx.Param)
  params = params.to_pure_dict()
  schedule = optax.constant_schedule(1e-3)
  options = opt_lib.OptimizerOptions()
  tx = opt_lib.make_optimizer(params, schedule, options)
  step = make_train_step(graphdef, tx, schedule, opt_lib.trainable_mask(params, ()),
                         vocab=cfg.vocab, loss_options=loss_lib.LossOptions())
  zero = lambda: jnp.zeros((), jnp.int32)  # noqa: E731  (distinct buffers: the state is donated)
  state = [TrainState(params, tx.init(params), zero(), jax.random.PRNGKey(0), zero(), zero())]
  data = {k: jnp.asarray(v) for k, v in data.items()}
  compiled = jax.jit(step).lower(state[0], data).compile()
  mem = compiled.memory_analysis()
  peak = (mem.argument_size_in_bytes + mem.output_size_in_bytes + mem.temp_size_in_bytes
          - mem.alias_size_in_bytes) if mem is not None else float("nan")

  def run():
    t = time.perf_counter()
    state[0], metrics = compiled(state[0], data)
    jax.block_until_ready(metrics["loss"])
    return time.perf_counter() - t

  run()                                                     # warm-up
  return param_count(model), run, peak, model


def decoder(model, slots, prompt_len, new_tokens):
  """A function that prefills `slots` prompts, decodes them to the end and returns tokens/s of the
  decode loop (compiled and warmed up here)."""
  engine = Engine(model, slots=slots, max_length=prompt_len + new_tokens + 16, steps_per_call=16,
                  stop_ids=())
  vocab = model.cfg.vocab
  prompt = [BOS_ID, vocab.special_id("[TTS]"), vocab.special_id("[TEXT]")] + list(
      range(vocab.text_start + 10, vocab.text_start + prompt_len - 4)) + [vocab.special_id("[SPEECH]")]

  def filled():
    state = engine.init_decode_state()
    for s in range(slots):
      state = engine.insert(engine.prefill(prompt, mode="any", max_new_tokens=new_tokens + 1),
                            state, s)
    return jax.block_until_ready(state)

  def run():
    state = filled()
    t, n = time.perf_counter(), 0
    while bool(state.active_B.any()):
      state, out = engine.generate(state)
      n += int(np.asarray(out.emitted_NB).sum())
    return n / (time.perf_counter() - t)

  jax.block_until_ready(engine.generate(filled())[1].tokens_NB)   # compile + warm up
  return run


def decode_rounds(models: dict, args) -> dict:
  """Decode tokens/s per model: median over `args.rounds` rounds that alternate between the
  models (load from other jobs reaches both alike); also the median of the per-round ratios."""
  runs = {name: decoder(model, args.slots, 32, args.new_tokens) for name, model in models.items()}
  tps = {name: [] for name in runs}
  for _ in range(args.rounds):
    for name, run in runs.items():
      tps[name].append(run())
  out = {name: statistics.median(v) for name, v in tps.items()}
  out["ratio"] = statistics.median(z / s for s, z in zip(tps["shared"], tps["zipper"]))
  return out


def decode_only(args):
  """Decode tokens/s of both models without building train steps (--skip_train)."""
  models = {name: build(cfg) for name, cfg in configs(args.cross_every, args.impl).items()}
  tps = decode_rounds(models, args)
  for name, model in models.items():
    print(f"{name:7s} params {param_count(model) / 1e6:6.2f}M  decode {tps[name]:7.1f} tok/s")
  print(f"zipper / shared: decode {tps['ratio']:.2f}x (median of {args.rounds} alternating rounds)")


def main():
  p = argparse.ArgumentParser()
  p.add_argument("--batch", type=int, default=8)
  p.add_argument("--seq", type=int, default=256)
  p.add_argument("--steps", type=int, default=5)
  p.add_argument("--cross_every", type=int, default=1)
  p.add_argument("--impl", default="auto")
  p.add_argument("--skip_decode", action="store_true")
  p.add_argument("--skip_train", action="store_true", help="decode tokens/s only")
  p.add_argument("--slots", type=int, default=4)
  p.add_argument("--new_tokens", type=int, default=96)
  p.add_argument("--rounds", type=int, default=3, help="alternating decode rounds")
  args = p.parse_args()
  print(f"{platform.processor() or platform.machine()}, {os.cpu_count()} cpus, jax "
        f"{jax.__version__} {jax.default_backend()}; batch {args.batch} x {args.seq}, "
        f"attention {args.impl}, cross_every {args.cross_every}")
  if args.skip_train:
    return decode_only(args)
  steps, results = {}, {}
  for name, cfg in configs(args.cross_every, args.impl).items():
    n, run, peak, model = train_step(cfg, batch(cfg.vocab, args.batch, args.seq))
    steps[name], results[name] = run, (n, peak, model)
  # The steps alternate between the models, so that load from other jobs on the machine reaches
  # both alike; the ratio is the median of the per-round ratios.
  times = {name: [] for name in steps}
  for _ in range(args.steps):
    for name, run in steps.items():
      times[name].append(run())
  tps = {} if args.skip_decode else decode_rounds({k: v[2] for k, v in results.items()}, args)
  for name, (n, peak, model) in results.items():
    decode = tps.get(name)
    results[name] = (n, statistics.median(times[name]), peak, decode)
    print(f"{name:7s} params {n / 1e6:6.2f}M  step {results[name][1] * 1e3:8.1f} ms  "
          f"peak {peak / 2**20:8.1f} MiB" + ("" if decode is None else f"  decode {decode:7.1f} tok/s"))
  (n0, _, m0, d0), (n1, _, m1, d1) = results["shared"], results["zipper"]
  ratio = statistics.median(z / s for s, z in zip(times["shared"], times["zipper"]))
  print(f"zipper / shared: params {n1 / n0:.2f}x  step {ratio:.2f}x (median of {args.steps} "
        f"alternating rounds)  peak {m1 / m0:.2f}x"
        + ("" if d0 is None else f"  decode {tps['ratio']:.2f}x (median of {args.rounds} rounds)"))


if __name__ == "__main__":
  main()
