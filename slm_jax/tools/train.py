"""slm-train: train (or resume) a speech-text LM from gin files.

  slm-train --gin_file=runs/demo_synthetic.gin --gin_file=mesh/fsdp.gin \
            --gin_param=train.total_steps=200 --workdir=runs/exp1

Rerunning the same command resumes from the last complete checkpoint in --workdir. On TPU pods
and SLURM, run the same command on every host (JAX detects the cluster); elsewhere add
--coordinator_address=HOST:PORT --num_processes=N --process_id=I (docs/launching.md).

Exit codes: 0 trained (or nothing left to do); 2 a known error (a gin typo, a checkpoint of another
model, a non-finite loss, a missing file), said in one line on stderr; 130 interrupted.
"""
from __future__ import annotations

import argparse
import logging
import sys

from slm_jax.tools import cli_errors


def parse_args(argv=None) -> argparse.Namespace:
  p = argparse.ArgumentParser(prog="slm-train", description=__doc__,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("--gin_file", action="append", default=[],
                 help="gin file (repeatable), looked up in the working dir, then configs/")
  p.add_argument("--gin_param", action="append", default=[],
                 help="a gin binding, e.g. train.total_steps=100 (repeatable)")
  p.add_argument("--workdir", help="checkpoints, TensorBoard logs and operative_config.gin go here")
  p.add_argument("--hf_checkpoint", default=None, metavar="DIR",
                 help="start a fresh run's text path from this Hugging Face Llama/Qwen2 directory "
                      "(sets WarmStart.hf_checkpoint; docs/warm_start.md)")
  p.add_argument("--coordinator_address", default=None, help="HOST:PORT of process 0 (multi-host)")
  p.add_argument("--num_processes", type=int, default=None)
  p.add_argument("--process_id", type=int, default=None)
  p.add_argument("--no_progress", action="store_true", help="no progress bar (log files, CI)")
  p.add_argument("--help_gin", action="store_true", help="list the gin files under configs/")
  return p.parse_args(argv)


def main(argv=None) -> int:
  args = parse_args(argv)
  logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
  from slm_jax import configuration  # pylint: disable=import-outside-toplevel
  if args.help_gin:
    print("\n".join(configuration.available_configs()))
    return 0
  if not args.workdir:
    print("slm-train: error: --workdir is required (checkpoints and logs go there)", file=sys.stderr)
    return 2
  if not args.gin_file:
    print("slm-train: error: give at least one --gin_file, e.g. --gin_file=runs/demo_synthetic.gin "
          "(--help_gin lists them)", file=sys.stderr)
    return 2
  from slm_jax.train import distributed  # pylint: disable=import-outside-toplevel
  distributed.initialize(args.coordinator_address, args.num_processes, args.process_id)
  import slm_jax.train.loop as loop  # pylint: disable=import-outside-toplevel
  # Known errors (a gin typo, a checkpoint of another model, a non-finite loss, ...) end in one
  # message and exit code 2 through cli_errors.run_main.
  warm = [f"WarmStart.hf_checkpoint = {args.hf_checkpoint!r}"] if args.hf_checkpoint else []
  configuration.parse(args.gin_file, args.gin_param + warm)
  try:
    loop.train(args.workdir, progress=not args.no_progress)
  except KeyboardInterrupt:
    print("slm-train: interrupted; rerun the same command to resume from the last checkpoint",
          file=sys.stderr)
    return 130
  return 0


def run():
  """Console-script entry point."""
  sys.exit(cli_errors.run_main("slm-train", main))


if __name__ == "__main__":
  run()
