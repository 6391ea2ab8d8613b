"""`make demo`: train the demo model on CPU for a few minutes and show the loss falling.

  python -m slm_jax.tools.demo --workdir=runs/demo [--gin_param=TOTAL_STEPS=100]

Runs configs/runs/demo_synthetic.gin (the data source is the gin binding `train.data_factory`),
writes checkpoints, TensorBoard logs and a loss-curve PNG into --workdir, and prints what it did.
Rerunning resumes from the last checkpoint.
"""
from __future__ import annotations

import argparse
import os
import sys
import time

DEMO_GIN = "runs/demo_synthetic.gin"


def main(argv=None) -> int:
  p = argparse.ArgumentParser(prog="demo", description=__doc__,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("--workdir", default="runs/demo")
  p.add_argument("--gin_file", action="append", default=None,
                 help=f"gin files (default {DEMO_GIN})")
  p.add_argument("--gin_param", action="append", default=[], help="extra gin bindings")
  args = p.parse_args(argv)
  os.environ.setdefault("JAX_PLATFORMS", "cpu")

  from slm_jax import configuration  # pylint: disable=import-outside-toplevel
  from slm_jax.tools.train import quiet_gin_search_path_misses  # pylint: disable=import-outside-toplevel
  quiet_gin_search_path_misses()
  import slm_jax.train.loop as loop  # pylint: disable=import-outside-toplevel
  from slm_jax.tools import plot_metrics  # pylint: disable=import-outside-toplevel
  files = args.gin_file or [DEMO_GIN]
  configuration.parse(files, args.gin_param)
  print(f"demo: training with {', '.join(files)} into {args.workdir} "
        "(Ctrl-C stops; rerunning resumes from the last checkpoint)", flush=True)
  t0 = time.time()
  try:
    result = loop.train(args.workdir)
  except KeyboardInterrupt:
    print("demo: interrupted; rerun `make demo` to resume", file=sys.stderr)
    return 130
  minutes = (time.time() - t0) / 60
  png = plot_metrics.plot(os.path.join(args.workdir, "tensorboard"),
                          os.path.join(args.workdir, "loss.png"))
  losses = plot_metrics.read_scalars(os.path.join(args.workdir, "tensorboard"))["train/loss"]
  evals = result["eval"]
  ckpt_dir = os.path.join(args.workdir, "checkpoints")
  steps = sorted(int(d) for d in os.listdir(ckpt_dir) if d.isdigit()) if os.path.isdir(ckpt_dir) else []
  print("\n== demo summary ==")
  print(f"  trained steps {losses[0][0]}..{losses[-1][0]} in {minutes:.1f} min "
        f"(this invocation: {len(result['history'])} steps)")
  print(f"  train loss: {losses[0][1]:.3f} at step {losses[0][0]} -> {losses[-1][1]:.3f} at step "
        f"{losses[-1][0]}")
  if evals:
    print(f"  held-out loss: " + ", ".join(f"{e['loss/ce']:.3f} (step {e['step']})" for e in evals))
  tail = [h for h in result["history"] if "tokens_per_s" in h]
  if tail:
    tps = sorted(h["tokens_per_s"] for h in tail)[len(tail) // 2]
    mfu = sorted(h.get("mfu", 0.0) for h in tail)[len(tail) // 2]
    print(f"  throughput: {tps:.0f} tokens/s (median), MFU {100 * mfu:.0f}% of the measured matmul peak")
  print(f"  checkpoints: {ckpt_dir} (steps {steps})")
  print(f"  loss curve:  {png}")
  print(f"  config:      {os.path.join(args.workdir, 'operative_config.gin')}")
  print(f"  TensorBoard: tensorboard --logdir {os.path.join(args.workdir, 'tensorboard')}")
  return 0


if __name__ == "__main__":
  sys.exit(main())
