"""`make demo`: the main job, end to end on CPU from nothing but Debian packages.

  python -m slm_jax.tools.demo --workdir=runs/demo [--corpus_dir=data/demo_corpus]
                               [--gin_param=TOTAL_STEPS=300] [--synthetic]

1. builds the offline demo corpus (fortunes sentences spoken by flite/espeak-ng voices with word
   timings, plus real speech from pocketsphinx-testdata)          slm-data build-demo
2. trains a 4096-piece sentencepiece model on its sentences         slm-data train-spm
3. fits 512 k-means speech units at 25 Hz on its training audio     slm-data fit-kmeans
4. caches the Spirit LM style mixture (speech-only / word-aligned interleaved / text-only thirds)
   for the train and validation splits                              slm-data cache
5. trains the demo model (configs/runs/demo.gin) on it with the grain pipeline, writing
   checkpoints, TensorBoard logs and a loss-curve PNG, and prints a summary.

Every step is skipped when its output exists, and training resumes from the last checkpoint, so
rerunning continues where it stopped. `--synthetic` trains on the built-in synthetic task instead
(configs/runs/demo_synthetic.gin, no corpus needed).
"""
from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import time

from slm_jax.tools import cli_errors

DEMO_GIN = "runs/demo.gin"
SYNTHETIC_GIN = "runs/demo_synthetic.gin"
MIXTURE = "demo_spiritlm_thirds"


def _run(step: str, args: list[str]) -> None:
  print(f"\n== demo: {step} ==\n$ {' '.join(args)}", flush=True)
  t0 = time.time()
  proc = subprocess.run([sys.executable, "-m", "slm_jax.tools.data"] + args, check=False)
  if proc.returncode:
    raise SystemExit(f"demo: step '{step}' failed (exit {proc.returncode}); fix the error above and "
                     "rerun `make demo` (finished steps are kept)")
  print(f"== demo: {step} done in {time.time() - t0:.0f} s ==", flush=True)


def prepare_data(corpus_dir: str, cache_root: str) -> list[str]:
  """Steps 1-4; returns the gin bindings that point training at the results."""
  if not os.path.exists(os.path.join(corpus_dir, "build_info.json")):
    _run("build the demo corpus", ["build-demo", "--out", corpus_dir])
  else:
    print(f"demo: corpus present at {corpus_dir}", flush=True)
  tok_dir = os.path.join(corpus_dir, "tokenizers")
  spm_prefix = os.path.join(tok_dir, "spm4096")
  if not os.path.exists(spm_prefix + ".model"):
    _run("train sentencepiece", ["train-spm", "--input", os.path.join(corpus_dir, "texts.txt"),
                                 "--vocab_size", "4096", "--out", spm_prefix])
  kmeans_dir = os.path.join(tok_dir, "kmeans512")
  if not os.path.exists(os.path.join(kmeans_dir, "speech_tokenizer.json")):
    _run("fit k-means speech units",
         ["fit-kmeans", "--audio_glob", os.path.join(corpus_dir, "audio", "train", "*.wav"),
          "--num_units", "512", "--rate", "25", "--max_files", "800", "--out", kmeans_dir])

  from slm_jax.data.speech import load_speech_tokenizer  # pylint: disable=import-outside-toplevel
  from slm_jax.data.text import SentencePieceVocab  # pylint: disable=import-outside-toplevel
  bindings = [
      f"DEMO_CORPUS_DIR = '{corpus_dir}'",
      f"DEMO_CACHE = '{cache_root}'",
      f"UnifiedVocab.text_vocab_name = '{SentencePieceVocab(spm_prefix + '.model').name}'",
      f"UnifiedVocab.speech_tokenizer_name = '{load_speech_tokenizer(kmeans_dir).name}'",
  ]
  gin_args = ["--gin_file", "models/demo.gin", "--gin_file", f"tasks/{MIXTURE}.gin"]
  for b in bindings:
    gin_args += ["--gin_param", b]
  for split in ("train", "validation"):
    out = os.path.join(cache_root, split)
    if not os.path.exists(os.path.join(out, "mixture.json")):
      _run(f"cache {MIXTURE} ({split})",
           gin_args + ["cache", "--task", MIXTURE, "--split", split, "--out", out])
  return bindings


def _summary(workdir: str, result: dict, minutes: float) -> None:
  from slm_jax.tools import plot_metrics  # pylint: disable=import-outside-toplevel
  tb = os.path.join(workdir, "tensorboard")
  png = plot_metrics.plot(tb, os.path.join(workdir, "loss.png"))
  losses = plot_metrics.read_scalars(tb)["train/loss"]
  ckpt_dir = os.path.join(workdir, "checkpoints")
  steps = sorted(int(d) for d in os.listdir(ckpt_dir) if d.isdigit()) if os.path.isdir(ckpt_dir) else []
  print("\n== demo summary ==")
  if result["history"]:
    print(f"  trained steps {result['history'][0]['step']}..{result['history'][-1]['step']} in "
          f"{minutes:.1f} min")
  else:
    print(f"  already trained to step {losses[-1][0]}: nothing to do (remove {workdir} to retrain)")
  print(f"  train loss: {losses[0][1]:.3f} at step {losses[0][0]} -> {losses[-1][1]:.3f} at step "
        f"{losses[-1][0]}")
  if result["eval"]:
    print("  held-out loss: " + ", ".join(f"{e['loss/ce']:.3f} (step {e['step']})"
                                          for e in result["eval"]))
    last = result["eval"][-1]
    print(f"  held-out at step {last['step']}: text CE {last.get('loss/text_ce', float('nan')):.3f}, "
          f"speech CE {last.get('loss/speech_ce', float('nan')):.3f}")
  tail = [h for h in result["history"] if "tokens_per_s" in h]
  if tail:
    tps = sorted(h["tokens_per_s"] for h in tail)[len(tail) // 2]
    mfu = sorted(h.get("mfu", 0.0) for h in tail)[len(tail) // 2]
    print(f"  throughput: {tps:.0f} tokens/s (median), MFU {100 * mfu:.0f}% of the measured matmul peak")
  print(f"  checkpoints: {ckpt_dir} (steps {steps})")
  print(f"  loss curve:  {png}")
  print(f"  config:      {os.path.join(workdir, 'operative_config.gin')}")
  print(f"  TensorBoard: {tensorboard_command(tb)}")


def tensorboard_command(logdir: str, bin_dir: str | None = None) -> str:
  """The command that opens `logdir`: this environment's `tensorboard` (`make demo` installs it
  into .venv, whose bin/ need not be on PATH), or how to install it."""
  exe = os.path.join(bin_dir or os.path.dirname(sys.executable), "tensorboard")
  if os.path.exists(exe):
    relative = os.path.relpath(exe)
    return f"{exe if relative.startswith('..') else relative} --logdir {logdir}"
  if shutil.which("tensorboard"):
    return f"tensorboard --logdir {logdir}"
  return f"tensorboard --logdir {logdir}  (not installed: pip install 'tensorboard>=2.20,<3')"


def main(argv=None) -> int:
  p = argparse.ArgumentParser(prog="demo", description=__doc__,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("--workdir", default="runs/demo")
  p.add_argument("--corpus_dir", default="data/demo_corpus",
                 help="where the demo corpus, its tokenizers and caches live")
  p.add_argument("--synthetic", action="store_true", help="train on the synthetic task instead")
  p.add_argument("--gin_file", action="append", default=None,
                 help=f"gin files (default {DEMO_GIN}, or {SYNTHETIC_GIN} with --synthetic)")
  p.add_argument("--gin_param", action="append", default=[], help="extra gin bindings")
  args = p.parse_args(argv)
  os.environ.setdefault("JAX_PLATFORMS", "cpu")
  corpus_dir = os.path.abspath(args.corpus_dir)
  t_start = time.time()
  bindings = [] if args.synthetic else prepare_data(corpus_dir, os.path.join(corpus_dir, "cache", MIXTURE))

  from slm_jax import configuration  # pylint: disable=import-outside-toplevel
  import slm_jax.train.loop as loop  # pylint: disable=import-outside-toplevel
  files = args.gin_file or [SYNTHETIC_GIN if args.synthetic else DEMO_GIN]
  configuration.parse(files, bindings + args.gin_param)
  print(f"\n== demo: train with {', '.join(files)} into {args.workdir} ==\n"
        "(Ctrl-C stops; rerunning resumes from the last checkpoint)", flush=True)
  t0 = time.time()
  try:
    result = loop.train(args.workdir)
  except KeyboardInterrupt:
    print("demo: interrupted; rerun `make demo` to resume", file=sys.stderr)
    return 130
  _summary(args.workdir, result, (time.time() - t0) / 60)
  print(f"  total demo time: {(time.time() - t_start) / 60:.1f} min")
  return 0


if __name__ == "__main__":
  sys.exit(cli_errors.run_main("demo", main))
