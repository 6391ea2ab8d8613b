"""slm-sweep: a grid of gin overrides -> one training + evaluation per cell -> one results table.

    slm-sweep --config sweep.py --root runs/sweep                # runs them here, one after another
    slm-sweep --config sweep.py --root runs/sweep --print_jobs   # one shell line per run (a cluster)
    slm-sweep --config sweep.py --root runs/sweep --collect      # only the table, from finished runs

`--config` is a Python file whose `get_config()` returns an `ml_collections.ConfigDict`
(`default_config()` below is the Zipper ablation grid of docs/ablations.md):

    base_gin_files   gin files every run reads (e.g. ["runs/demo.gin"])
    base_gin_params  bindings every run takes (e.g. ["DEMO_CACHE = '/data/cache'"])
    axes             {axis: [{"name", "gin_files", "gin_params"}, ...]}: the grid is their product;
                     a run is named by its variants' names joined with "-"
    eval_args        `slm-eval` arguments after the run's workdir (manifests, pair sets, loss cache)

Each run trains in ROOT/NAME (`slm-train`), then `slm-eval --workdir ROOT/NAME ... --out
ROOT/NAME/eval.json`; a run whose eval.json exists is skipped (rerunning resumes a sweep). The
table (ROOT/results.md and ROOT/results.json) has one row per run and the final metrics as columns:
losses, ASR CER / WER, TTS loopback WER and pairwise accuracies, as slm-eval reported them.
"""
from __future__ import annotations

import argparse
import importlib.util
import itertools
import json
import os
import shlex
import subprocess
import sys

import ml_collections

from slm_jax.atomic_write import atomic_write
from slm_jax.errors import SlmError
from slm_jax.evaluation import report

PROG = "slm-sweep"
EVAL_FILE = "eval.json"
# scalar keys of slm-eval's results (report.scalars) that go into the table, by suffix
TABLE_METRICS = ("loss/ce", "loss/text_ce", "loss/speech_ce", "cer", "wer", "accuracy")


class SweepError(SlmError, ValueError):
  """A sweep description that cannot run (no axes, a variant without a name, a failed run)."""


def variant(name: str, gin_files=(), gin_params=()) -> dict:
  return {"name": name, "gin_files": list(gin_files), "gin_params": list(gin_params)}


def default_config() -> ml_collections.ConfigDict:
  """The Zipper ablations over the demo recipe (docs/ablations.md): architecture x fusion."""
  c = ml_collections.ConfigDict()
  c.base_gin_files = ["runs/demo.gin"]
  c.base_gin_params = ["DEMO_CACHE = 'data/demo_cache'",
                       "DEMO_TEXT_TOKENIZER = 'data/demo_corpus/tokenizers/spm512.model'",
                       "DEMO_SPEECH_TOKENIZER = 'data/demo_corpus/tokenizers/dmel25'",
                       "DEMO_ASR_MANIFEST = 'data/demo_corpus/manifest_validation.jsonl'"]
  c.axes = {"model": [
      variant("shared"),
      variant("zipper", ["ablations/zipper.gin"]),
      variant("zipper_x2", ["ablations/zipper.gin", "ablations/zipper_cross_every_2.gin"]),
      variant("zipper_x4", ["ablations/zipper.gin", "ablations/zipper_cross_every_4.gin"]),
      variant("zipper_frozen_text", ["ablations/zipper.gin", "ablations/zipper_frozen_text.gin"]),
  ]}
  c.eval_args = ["--asr_manifest", "test=data/demo_corpus/manifest_test.jsonl",
                 "--tts_manifest", "data/demo_corpus/manifest_test.jsonl", "--max_examples", "32",
                 "--loss_cache", "data/demo_cache"]
  return c


def load_config(path: str | None) -> ml_collections.ConfigDict:
  if not path:
    return default_config()
  if not os.path.exists(path):
    raise FileNotFoundError(2, "no such sweep config", path)
  spec = importlib.util.spec_from_file_location("slm_sweep_config", path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  if not hasattr(module, "get_config"):
    raise SweepError(f"{path} defines no get_config() returning an ml_collections.ConfigDict")
  return module.get_config()


def runs(config) -> list[dict]:
  """The grid: [{"name", "gin_files", "gin_params"}] in axis order."""
  axes = dict(config.axes)
  if not axes or not all(axes.values()):
    raise SweepError("the sweep config needs `axes`: {axis: [variant, ...]}, none empty")
  out = []
  for combo in itertools.product(*axes.values()):
    names = [v["name"] for v in combo]
    if not all(names):
      raise SweepError(f"every variant needs a name; got {names}")
    out.append({"name": "-".join(names),
                "gin_files": list(config.base_gin_files) + [f for v in combo for f in v.get("gin_files", ())],
                "gin_params": list(config.base_gin_params) + [p for v in combo for p in v.get("gin_params", ())]})
  if len({r["name"] for r in out}) != len(out):
    raise SweepError("two runs of the grid have the same name; give the variants distinct names")
  return out


def commands(run: dict, root: str, eval_args) -> list[list[str]]:
  """The run's `slm-train` and `slm-eval` command lines."""
  workdir = os.path.join(root, run["name"])
  train = ["slm-train", f"--workdir={workdir}"] + [f"--gin_file={f}" for f in run["gin_files"]] + [
      f"--gin_param={p}" for p in run["gin_params"]]
  evaluate = ["slm-eval", "--workdir", workdir] + list(eval_args) + [
      "--out", os.path.join(workdir, EVAL_FILE), "--no_progress"]
  return [train, evaluate]


def collect(root: str, names) -> tuple[list[dict], list[str]]:
  """Rows {run, metric: value} from each run's eval.json, and the metric columns."""
  rows, columns = [], []
  for name in names:
    path = os.path.join(root, name, EVAL_FILE)
    row = {"run": name}
    if os.path.exists(path):
      with open(path) as f:
        results = json.load(f)
      row["step"] = results.get("step")
      for key, value in report.scalars(results).items():
        if key.endswith(TABLE_METRICS) and "/baseline/" not in key and "/per_speaker/" not in key \
            and "/resynthesis/" not in key and "/original/" not in key:
          row[key] = value
          if key not in columns:
            columns.append(key)
    rows.append(row)
  return rows, sorted(columns)


def markdown(rows: list[dict], columns: list[str]) -> str:
  def cell(v):
    return "" if v is None else (f"{v:.4g}" if isinstance(v, float) else str(v))
  head = ["run", "step"] + columns
  lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
  lines += ["| " + " | ".join(cell(r.get(c)) for c in head) + " |" for r in rows]
  return "\n".join(lines) + "\n"


def main(argv=None) -> int:
  p = argparse.ArgumentParser(prog=PROG, description=__doc__.split("\n")[0])
  p.add_argument("--config", default=None, help="a Python file with get_config() (default: the "
                 "Zipper ablation grid of docs/ablations.md)")
  p.add_argument("--root", required=True, help="folder of the runs (ROOT/NAME) and the table")
  mode = p.add_mutually_exclusive_group()
  mode.add_argument("--print_jobs", action="store_true", help="print one shell line per run")
  mode.add_argument("--collect", action="store_true", help="only collect the table")
  args = p.parse_args(argv)
  config = load_config(args.config)
  grid = runs(config)
  if args.print_jobs:
    for run in grid:
      print(" && ".join(shlex.join(c) for c in commands(run, args.root, config.eval_args)))
    return 0
  if not args.collect:
    for run in grid:
      if os.path.exists(os.path.join(args.root, run["name"], EVAL_FILE)):
        print(f"{PROG}: {run['name']}: done before, skipped", file=sys.stderr)
        continue
      for cmd in commands(run, args.root, config.eval_args):
        print(f"{PROG}: {shlex.join(cmd)}", file=sys.stderr)
        if subprocess.run(cmd, check=False).returncode:
          raise SweepError(f"run {run['name']}: `{cmd[0]}` failed (its output is above); fix it "
                           "and rerun the sweep (finished runs are skipped)")
  rows, columns = collect(args.root, [r["name"] for r in grid])
  table = markdown(rows, columns)
  os.makedirs(args.root, exist_ok=True)
  atomic_write(os.path.join(args.root, "results.md"), table)
  atomic_write(os.path.join(args.root, "results.json"), json.dumps(rows, indent=1) + "\n")
  print(table, end="")
  return 0


def run() -> None:
  from slm_jax.tools import cli_errors  # pylint: disable=import-outside-toplevel
  sys.exit(cli_errors.run_main(PROG, main))


if __name__ == "__main__":
  run()
