"""Which errors in dMel frames the recognizer tolerates: size against structure. One run, one table.

  python bench/dmel_error_structure.py --manifest data/demo_corpus/manifest_test.jsonl --num 12

The true dMel levels of the first N utterances of a manifest (the demo's tokenizer by default:
80 mel bins at 50 Hz, 16 levels, read four frames per position) are perturbed in known ways,
resynthesized (mel inversion + Griffin-Lim, as the TTS evaluation does) and transcribed by the
offline recognizer. Each row gives the mean |level error| against the truth beside the WER / CER:

  true frames               the tokenizer's ceiling (its round trip)
  +-1 level, every bin      each level moved one step up or down at random (clipped)
  noise sd 1, rounded       gaussian noise of one level's standard deviation, rounded to levels
  noise sd 1, continuous    the same left between levels (is rounding what hurts?)
  noise sd 1 per position   one draw per (80 ms position, bin), shared by its four frames
  noise sd 1 across bins    each draw shared with its neighbouring mel bins: the spectral
                            envelope's shape changes
  40 / 80 ms mean           each run of 2 / 4 frames replaced by its mean: timing inside it lost
                            (what a predictor that knows each position's spectrum but not when
                            within the position it changes would give)
  delayed one position      the truth 80 ms late: large errors, speech intact

A TTS model's teacher-forced frames (bench/tts_teacher_forcing.py) are read against these: a
mean level error alone does not say whether speech survives.
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import sys

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))


def _steps(levels_TM, rng, top):
  """Every level one step up or down at random, clipped to [0, top]."""
  return np.clip(levels_TM + rng.choice([-1.0, 1.0], size=levels_TM.shape), 0, top)


def _noise(levels_TM, rng, top, *, rounded=True, per_position=0, across_bins=False):
  """Gaussian noise of one level's sd; shared by `per_position` frames or by neighbouring bins."""
  t, m = levels_TM.shape
  if per_position:
    n = np.repeat(rng.normal(0, 1, (-(-t // per_position), m)), per_position, axis=0)[:t]
  else:
    n = rng.normal(0, 1, (t, m))
  if across_bins:   # each draw shared by three neighbouring bins, variance kept at 1
    n = (n + np.roll(n, 1, axis=1) + np.roll(n, -1, axis=1)) / np.sqrt(3)
  out = np.clip(levels_TM + n, 0, top)
  return np.rint(out) if rounded else out


def _mean_runs(levels_TM, k):
  """Each run of k frames replaced by its mean (the last partial run kept)."""
  t = len(levels_TM) // k * k
  out = levels_TM.copy()
  out[:t] = np.repeat(levels_TM[:t].reshape(-1, k, levels_TM.shape[1]).mean(1), k, axis=0)
  return out


def _delayed(levels_TM, k):
  return np.concatenate([np.repeat(levels_TM[:1], k, axis=0), levels_TM[:-k]], axis=0)


def cases(stack: int):
  return {
      "true frames": lambda x, rng, top: x,
      "+-1 level, every bin": _steps,
      "noise sd 1, rounded": _noise,
      "noise sd 1, continuous": lambda x, rng, top: _noise(x, rng, top, rounded=False),
      f"noise sd 1 per position ({stack} frames)":
          lambda x, rng, top: _noise(x, rng, top, per_position=stack),
      "noise sd 1 across neighbouring bins":
          lambda x, rng, top: _noise(x, rng, top, across_bins=True),
      "40 ms mean (2 frames)": lambda x, rng, top: _mean_runs(x, 2),
      f"{20 * stack} ms mean ({stack} frames)": lambda x, rng, top: _mean_runs(x, stack),
      f"delayed one position ({stack} frames)": lambda x, rng, top: _delayed(x, stack),
  }


def main(argv=None) -> int:
  p = argparse.ArgumentParser(description=__doc__,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("--manifest", required=True, help="JSONL rows with audio_path and text")
  p.add_argument("--num", type=int, default=12, help="utterances (the first N rows)")
  p.add_argument("--hop_length", type=int, default=320, help="the demo's: 50 Hz at 16 kHz")
  p.add_argument("--win_length", type=int, default=800)
  p.add_argument("--stack", type=int, default=4, help="frames per model position (the demo's 4)")
  p.add_argument("--workers", type=int, default=2, help="recognizer processes")
  p.add_argument("--seed", type=int, default=0)
  args = p.parse_args(argv)
  from slm_jax.data import audio as audio_lib  # pylint: disable=import-outside-toplevel
  from slm_jax.data.speech.dmel import DMelTokenizer  # pylint: disable=import-outside-toplevel
  from slm_jax.data.speech.mel import MelConfig, mel_to_audio  # pylint: disable=import-outside-toplevel
  from slm_jax.evaluation import recognizer  # pylint: disable=import-outside-toplevel
  from slm_jax.evaluation.error_rates import error_rates  # pylint: disable=import-outside-toplevel

  tok = DMelTokenizer(mel=MelConfig(hop_length=args.hop_length, win_length=args.win_length))
  root = os.path.dirname(os.path.abspath(args.manifest))
  with open(args.manifest, encoding="utf-8") as f:
    rows = [json.loads(line) for line in f if line.strip()][:args.num]
  truth = []
  for r in rows:
    audio, rate = audio_lib.read_audio(os.path.join(root, r["audio_path"]),
                                       sample_rate=tok.sample_rate)
    truth.append(tok.encode(audio, rate).astype(np.float64))   # [T, 80] levels, unstacked
  refs = [r["text"] for r in rows]
  top = tok.num_levels - 1
  print(f"# {datetime.date.today()} {platform.node()} {os.cpu_count()} cpus; "
        f"{' '.join(sys.argv)}")
  print(f"{len(rows)} utterances of {args.manifest}; {tok.name}, {args.stack} frames a "
        f"position\n")
  print("| frames | mean level error | WER | CER | first transcript |")
  print("|---|---|---|---|---|")
  for name, perturb in cases(args.stack).items():
    rng = np.random.default_rng(args.seed)
    frames = [perturb(x, rng, top) for x in truth]
    error = np.mean([np.abs(y - x).mean() for x, y in zip(truth, frames)])
    items = [recognizer.Synthesized(mel_to_audio, (tok.min_value + tok.step * y, tok.mel),
                                    tok.sample_rate) for y in frames]
    hyps = [r.text for r in recognizer.recognize(items, workers=args.workers)]
    rates = error_rates(refs, hyps)
    print(f"| {name} | {error:.2f} | {rates.wer:.1%} | {rates.cer:.1%} | {hyps[0]!r} |",
          flush=True)
  print(f"\n(first reference: {refs[0]!r})")
  return 0


if __name__ == "__main__":
  sys.exit(main())
