"""slm-export: a training run's checkpoint -> an inference checkpoint (docs/inference.md).

  slm-export --workdir runs/exp1 --out exports/exp1 [--step N] [--dtype bfloat16] [--quantize int8]

The inference checkpoint holds the parameters only (no optimizer state), in float32 or bfloat16,
optionally with int8 weight-only quantization of the matmul weights (per-output-channel scales),
plus the model config, the vocabulary spec and the tokenizer files the run's gin config names
(or --text_tokenizer / --speech_tokenizer). It is written to a temporary directory and renamed
into place when complete; an earlier export at --out is replaced, any other directory never is.

Exit codes: 0 exported; 2 a known error (no such run or step, a bad option, a missing tokenizer),
said in one line on stderr.
"""
from __future__ import annotations

import argparse
import logging
import sys

from slm_jax.tools import cli_errors

PROG = "slm-export"


def parse_args(argv=None) -> argparse.Namespace:
  p = argparse.ArgumentParser(prog=PROG, description=__doc__,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("--workdir", required=True, help="the training run (slm-train --workdir)")
  p.add_argument("--out", required=True, help="the inference checkpoint directory to write")
  p.add_argument("--step", type=int, default=None, help="checkpoint step (default: the latest)")
  p.add_argument("--dtype", choices=("float32", "bfloat16"), default="float32",
                 help="parameter dtype of the export and of the model loaded from it")
  p.add_argument("--quantize", choices=("none", "int8"), default="none",
                 help="int8: weight-only int8 matmul weights, per-output-channel scales")
  p.add_argument("--text_tokenizer", default=None, metavar="PATH",
                 help="text tokenizer to ship (sentencepiece .model or tokenizer.json); default: "
                      "the one the run's gin config names")
  p.add_argument("--speech_tokenizer", default=None, metavar="DIR",
                 help="speech tokenizer directory to ship (slm-data fit-kmeans --out DIR); "
                      "default: the one the run's gin config names")
  return p.parse_args(argv)


def main(argv=None) -> int:
  args = parse_args(argv)
  logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
  from absl import logging as absl_logging  # pylint: disable=import-outside-toplevel
  absl_logging.set_verbosity(absl_logging.ERROR)   # Orbax's notes on partial restores
  from slm_jax.export import inference_checkpoint  # pylint: disable=import-outside-toplevel
  info = inference_checkpoint.export_inference_checkpoint(
      args.workdir, args.out, step=args.step, dtype=args.dtype,
      quantize=None if args.quantize == "none" else args.quantize,
      text_tokenizer=args.text_tokenizer, speech_tokenizer=args.speech_tokenizer)
  tokenizers = ", ".join(f"{t['role']} {t['path']}" for t in info["tokenizers"]) or "none"
  print(f"{PROG}: step {info['step']} of {args.workdir} -> {info['directory']}: "
        f"{info['param_count'] / 1e6:.2f}M parameters, {info['dtype']}"
        f"{', int8 weights' if info['quantization'] else ''}, parameters "
        f"{info['param_bytes'] / 2**20:.2f} MiB, directory {info['directory_bytes'] / 2**20:.2f} MiB; "
        f"tokenizers: {tokenizers}", flush=True)
  vocab = info["vocab"]
  missing = [role for role, name in (("text", vocab.get("text_vocab_name")),
                                     ("speech", vocab.get("speech_tokenizer_name")))
             if name and not any(t["role"] == role for t in info["tokenizers"])]
  if missing:
    print(f"{PROG}: note: the vocabulary names a {' and a '.join(missing)} tokenizer the run's gin "
          "config does not point at; pass " +
          " ".join(f"--{r}_tokenizer" for r in missing) + " to ship it", file=sys.stderr)
  return 0


def run():
  """Console-script entry point."""
  sys.exit(cli_errors.run_main(PROG, main))


if __name__ == "__main__":
  run()
