"""Render loss curves from a run's TensorBoard event files to a PNG.

  python -m slm_jax.tools.plot_metrics --workdir=runs/demo [--out=runs/demo/loss.png]

Reads the event files directly (TFRecord framing + tensorboardX's Event proto), so neither
TensorFlow nor TensorBoard is needed.
"""
from __future__ import annotations

import argparse
import glob
import os
import struct
import sys
from collections import defaultdict

from slm_jax.tools import cli_errors

DEFAULT_TAGS = ("train/loss", "train/loss/text_ce", "train/loss/speech_ce", "eval/loss/ce")


def read_scalars(logdir: str) -> dict[str, list[tuple[int, float]]]:
  """{tag: [(step, value), ...]} from every event file under `logdir` (sorted by step; the last
  value written for a step wins, so a resumed run's repeated steps replace the earlier ones)."""
  from tensorboardX.proto import event_pb2  # pylint: disable=import-outside-toplevel
  by_tag: dict[str, dict[int, float]] = defaultdict(dict)
  for path in sorted(glob.glob(os.path.join(logdir, "**", "events.out.tfevents.*"), recursive=True),
                     key=os.path.getmtime):
    with open(path, "rb") as f:
      data = f.read()
    at = 0
    while at + 12 <= len(data):
      (length,) = struct.unpack("<Q", data[at:at + 8])
      record = data[at + 12:at + 12 + length]
      at += 12 + length + 4
      if len(record) < length:
        break                       # a record cut short by a killed writer
      event = event_pb2.Event()
      event.ParseFromString(record)
      for value in event.summary.value:
        if value.HasField("simple_value"):
          by_tag[value.tag][int(event.step)] = float(value.simple_value)
  return {tag: sorted(points.items()) for tag, points in by_tag.items()}


def plot(logdir: str, out: str, tags=DEFAULT_TAGS) -> str:
  import matplotlib  # pylint: disable=import-outside-toplevel
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # pylint: disable=import-outside-toplevel
  scalars = read_scalars(logdir)
  present = [t for t in tags if t in scalars]
  if not present:
    raise FileNotFoundError(f"no scalars {list(tags)} in event files under {logdir}; "
                            f"found {sorted(scalars)[:10]}. Is this a slm-train --workdir?")
  fig, ax = plt.subplots(figsize=(8, 4.5))
  for tag in present:
    steps, values = zip(*scalars[tag])
    ax.plot(steps, values, label=tag, marker="o" if len(steps) < 20 else None)
  ax.set_xlabel("step")
  ax.set_ylabel("cross-entropy (nats)")
  ax.set_title(os.path.basename(os.path.normpath(os.path.dirname(logdir))) or "loss")
  ax.grid(alpha=0.3)
  ax.legend()
  fig.tight_layout()
  os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
  fig.savefig(out, dpi=110)
  plt.close(fig)
  return out


def plot_run(logdir: str, out: str) -> str:
  """Losses (left) and held-out evaluation metrics over steps (right: ASR CER/WER, pairwise
  accuracies, anything under eval/ that is not a loss), one PNG."""
  import matplotlib  # pylint: disable=import-outside-toplevel
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # pylint: disable=import-outside-toplevel
  scalars = read_scalars(logdir)
  losses = [t for t in DEFAULT_TAGS if t in scalars]
  if not losses:
    raise FileNotFoundError(f"no loss scalars in event files under {logdir}")
  metrics = sorted(t for t in scalars if t.startswith("eval/") and "loss" not in t
                   and any(w in t for w in ("cer", "wer", "accuracy")))
  fig, axes = plt.subplots(1, 2 if metrics else 1, figsize=(13 if metrics else 8, 4.5))
  axes = list(axes) if metrics else [axes]
  for ax, tags, ylabel in ((axes[0], losses, "cross-entropy (nats)"),
                           (axes[-1], metrics, "rate")):
    if not tags:
      continue
    for tag in tags:
      steps, values = zip(*scalars[tag])
      ax.plot(steps, values, label=tag, marker="o" if len(steps) < 20 else None)
    ax.set_xlabel("step")
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
  fig.suptitle(os.path.basename(os.path.normpath(os.path.dirname(logdir))) or "run")
  fig.tight_layout()
  os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
  fig.savefig(out, dpi=110)
  plt.close(fig)
  return out


def main(argv=None) -> int:
  p = argparse.ArgumentParser(prog="plot_metrics", description=__doc__,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("--workdir", required=True, help="a slm-train --workdir (reads <workdir>/tensorboard)")
  p.add_argument("--out", default=None, help="PNG path (default <workdir>/loss.png)")
  p.add_argument("--tag", action="append", default=None, help="scalar tags to plot (repeatable)")
  args = p.parse_args(argv)
  logdir = os.path.join(args.workdir, "tensorboard")
  if not os.path.isdir(logdir):
    raise FileNotFoundError(f"no TensorBoard logs at {logdir}; is {args.workdir} a slm-train --workdir?")
  out = plot(logdir, args.out or os.path.join(args.workdir, "loss.png"), tuple(args.tag or DEFAULT_TAGS))
  print(f"wrote {out}")
  return 0


if __name__ == "__main__":
  sys.exit(cli_errors.run_main("plot_metrics", main))
