"""Speech-channel heads at every position vs only where the target is speech, in one run.

  python bench/speech_heads.py                      # the demo model and batch shape
  python bench/speech_heads.py --capacity 0.5 --batch 16 --rounds 8

The demo model (configs/models/demo.gin: 4 x 192, dMel K = 320, so 319 x 16 channel logits per
position) trains one step dense (`LossOptions.channel_head_capacity = None`) and one step gathered
(`= --capacity`), alternating; the ratio is the median of the per-round ratios, so other load on
the machine reaches both alike. Rows are packed like the demo mixture's: ASR documents ([ASR]
speech prompt, weight 0; text answer) and TTS documents ([TTS] text prompt, weight 0; speech
answer), alternating, so about a third of positions hold a speech target (the demo's cached
batches: 30%). Both steps' losses are printed (equal).
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

from slm_jax import configuration  # noqa: E402
from slm_jax.models import build as build_lib  # noqa: E402
from slm_jax.models import loss as loss_lib  # noqa: E402
from slm_jax.train import optimizer as opt_lib  # noqa: E402
from slm_jax.train.state import TrainState  # noqa: E402
from slm_jax.train.step import make_train_step  # noqa: E402
from slm_jax.unified_vocab import BOS_ID, EOS_ID  # noqa: E402


def demo_batch(vocab, b: int, l: int, seed: int = 0) -> dict:
  """Packed rows of ASR / TTS documents (40-60 frames, 10-20 text tokens) with their weights."""
  rng = np.random.default_rng(seed)
  tokens = np.zeros((b, l + 1), np.int32)
  weights = np.zeros((b, l + 1), np.float32)
  segments = np.zeros((b, l + 1), np.int32)
  positions = np.zeros((b, l + 1), np.int32)
  for r in range(b):
    seq, w, seg, pos, doc = [], [], [], [], 0
    while len(seq) < l + 1:
      doc += 1
      speech = rng.integers(vocab.speech_start, vocab.size, rng.integers(40, 60)).tolist()
      text = rng.integers(vocab.text_start, vocab.speech_start, rng.integers(10, 20)).tolist()
      if (doc + r) % 2:        # ASR and TTS alternate. ASR: the answer (text) is trained
        prompt, answer = [vocab.special_id("[ASR]")] + speech, text + [EOS_ID]
      else:                    # TTS: the answer (speech) is trained
        prompt, answer = [vocab.special_id("[TTS]")] + text, speech + [EOS_ID]
      ids = [BOS_ID] + prompt + answer
      seq += ids
      w += [0.0] * (1 + len(prompt)) + [1.0] * len(answer)
      seg += [doc] * len(ids)
      pos += list(range(len(ids)))
    tokens[r], weights[r], segments[r], positions[r] = (
        seq[:l + 1], w[:l + 1], seg[:l + 1], pos[:l + 1])
  codes = rng.integers(0, 16, (b, l + 1, vocab.num_channels - 1)).astype(np.int32)
  return {"tokens": tokens[:, :-1], "targets": tokens[:, 1:], "segment_ids": segments[:, :-1],
          "positions": positions[:, :-1], "loss_weights": weights[:, 1:],
          "speech_codes": codes[:, :-1], "target_speech_codes": codes[:, 1:]}


def compiled_step(cfg, data, capacity):
  """A function running one AdamW train step of `cfg` -> (seconds, loss)."""
  model = build_lib.build(cfg)
  graphdef, params = nnx.split(model, nnx.Param)
  params = params.to_pure_dict()
  schedule = optax.constant_schedule(1e-3)
  tx = opt_lib.make_optimizer(params, schedule, opt_lib.OptimizerOptions())
  step = make_train_step(graphdef, tx, schedule, opt_lib.trainable_mask(params, ()),
                         vocab=cfg.vocab,
                         loss_options=loss_lib.LossOptions(channel_head_capacity=capacity))
  zero = lambda: jnp.zeros((), jnp.int32)  # noqa: E731  (distinct buffers: the state is donated)
  state = [TrainState(params, tx.init(params), zero(), jax.random.PRNGKey(0), zero(), zero())]
  compiled = jax.jit(step, donate_argnums=0).lower(state[0], data).compile()

  def run():
    t = time.perf_counter()
    state[0], metrics = compiled(state[0], data)
    loss = float(metrics["loss"])
    return time.perf_counter() - t, loss

  return run


def main():
  p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  p.add_argument("--capacity", type=float, default=0.4)
  p.add_argument("--batch", type=int, default=8)
  p.add_argument("--seq", type=int, default=256)
  p.add_argument("--rounds", type=int, default=6)
  args = p.parse_args()
  configuration.parse(["models/demo.gin"], finalize=False)
  cfg = build_lib.config_from_gin()
  data = {k: jnp.asarray(v) for k, v in demo_batch(cfg.vocab, args.batch, args.seq).items()}
  target_speech = np.asarray(cfg.vocab.is_speech(data["targets"])) & (
      np.asarray(data["loss_weights"]) > 0)
  print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
        f"load(1m) {os.getloadavg()[0]:.2f}; jax {jax.__version__} ({jax.default_backend()})")
  print(f"model: configs/models/demo.gin, K = {cfg.num_channels}; batch {args.batch} x {args.seq}, "
        f"{100 * target_speech.mean():.1f}% of positions with a speech target")
  dense, gathered = compiled_step(cfg, data, None), compiled_step(cfg, data, args.capacity)
  dense(), gathered()                                  # warm-up
  times = {"dense": [], "gathered": []}
  losses = {}
  for _ in range(args.rounds):
    for name, fn in (("dense", dense), ("gathered", gathered)):
      t, losses[name] = fn()
      times[name].append(t)
  ratio = statistics.median(g / d for g, d in zip(times["gathered"], times["dense"]))
  tokens = args.batch * args.seq
  for name in ("dense", "gathered"):
    med = statistics.median(times[name])
    print(f"{name:>9}: {1e3 * med:7.1f} ms/step, {tokens / med:7.0f} tokens/s, "
          f"loss after {args.rounds + 1} steps {losses[name]:.6f}")
  print(f"gathered / dense step time (median of per-round ratios): {ratio:.3f} "
        f"(capacity {args.capacity})")


if __name__ == "__main__":
  main()
