"""slm-sweep: a grid of gin overrides -> one training + evaluation per cell -> one results table.

    slm-sweep --config sweep.py --root runs/sweep                # runs them here, one after another
    slm-sweep --config sweep.py --root runs/sweep --print_jobs   # one shell line per run (a cluster)
    slm-sweep --config sweep.py --root runs/sweep --collect      # only the table, from finished runs

`--config` is a Python file whose `get_config()` returns an `ml_collections.ConfigDict`
(configs/sweeps/zipper_demo.py, the Zipper ablation grid of docs/ablations.md, is the default):

    base_gin_files   gin files every run reads (e.g. ["runs/demo.gin"])
    base_gin_params  bindings every run takes (e.g. ["DEMO_CACHE = '{corpus}/cache/demo_main'"])
    axes             {axis: [{"name", "gin_files", "gin_params"}, ...]}: the grid is their product;
                     a run is named by its variants' names joined with "-"
    eval_args        `slm-eval` arguments after the run's workdir (manifests, pair sets, loss cache)
    setup            optional [{"name", "creates", "commands"}]: command lines run once before the
                     grid (e.g. pretraining a tower that runs warm start from), skipped when the
                     path `creates` exists
    columns          optional: the table's metric columns (default: every final metric)

`get_config(corpus)` (one argument) receives the corpus folder (below), e.g. to read the
tokenizer names its caches were built with.

In every string `{corpus}` becomes the demo corpus folder (`--corpus`, else $SLM_DEMO_CORPUS, else
data/demo_corpus, where `make demo` builds it) and `{root}` the sweep folder.

Each run trains in ROOT/NAME (`slm-train`), then `slm-eval --workdir ROOT/NAME ... --out
ROOT/NAME/eval.json`; each command's output is also kept in ROOT/NAME/<train|eval>.log. A run
whose eval.json exists is skipped, one whose training finished (ROOT/NAME/sweep_time.json) is only
evaluated: rerunning resumes a sweep. The table (ROOT/results.md and
ROOT/results.json) has one row per run: its parameter count, training minutes and the final
metrics (losses, ASR CER / WER, TTS loopback WER, pairwise accuracies) as slm-eval reported them.
"""
from __future__ import annotations

import argparse
import importlib.util
import inspect
import itertools
import json
import os
import re
import shlex
import subprocess
import sys
import time

import ml_collections

from slm_jax.atomic_write import atomic_write
from slm_jax.errors import SlmError
from slm_jax.evaluation import report

PROG = "slm-sweep"
EVAL_FILE = "eval.json"
TIME_FILE = "sweep_time.json"
DEFAULT_CONFIG = os.path.join("configs", "sweeps", "zipper_demo.py")
CORPUS_ENV = "SLM_DEMO_CORPUS"
DEFAULT_CORPUS = os.path.join("data", "demo_corpus")
# scalar keys of slm-eval's results (report.scalars) that go into the table, by suffix
TABLE_METRICS = ("loss/ce", "loss/text_ce", "loss/speech_ce", "loss/asr_ctc", "cer", "wer",
                 "accuracy")
PARAMS_LINE = re.compile(r"slm-train: ([0-9.]+)M parameters")


class SweepError(SlmError, ValueError):
  """A sweep description that cannot run (no axes, a variant without a name, a failed run)."""


def variant(name: str, gin_files=(), gin_params=()) -> dict:
  return {"name": name, "gin_files": list(gin_files), "gin_params": list(gin_params)}


def expand(value, corpus: str, root: str):
  """`{corpus}` and `{root}` replaced in a string, or in every string of a list."""
  if isinstance(value, str):
    return value.replace("{corpus}", corpus).replace("{root}", root)
  return [expand(v, corpus, root) for v in value]


def default_config_path() -> str:
  """configs/sweeps/zipper_demo.py of this checkout (else relative to the working directory)."""
  repo = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
  path = os.path.join(repo, DEFAULT_CONFIG)
  return path if os.path.exists(path) else DEFAULT_CONFIG


def load_config(path: str | None, corpus: str = DEFAULT_CORPUS) -> ml_collections.ConfigDict:
  """The config file's get_config(), or get_config(corpus) when it takes an argument (to read
  what it needs from the corpus, e.g. the tokenizer names its caches were built with)."""
  path = path or default_config_path()
  if not os.path.exists(path):
    raise FileNotFoundError(2, "no such sweep config", path)
  spec = importlib.util.spec_from_file_location("slm_sweep_config", path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  if not hasattr(module, "get_config"):
    raise SweepError(f"{path} defines no get_config() returning an ml_collections.ConfigDict")
  takes_corpus = bool(inspect.signature(module.get_config).parameters)
  return module.get_config(corpus) if takes_corpus else module.get_config()


def runs(config, corpus: str = DEFAULT_CORPUS, root: str = "") -> list[dict]:
  """The grid: [{"name", "gin_files", "gin_params"}] in axis order, `{corpus}`/`{root}` expanded."""
  axes = dict(config.axes)
  if not axes or not all(axes.values()):
    raise SweepError("the sweep config needs `axes`: {axis: [variant, ...]}, none empty")
  out = []
  for combo in itertools.product(*axes.values()):
    names = [v["name"] for v in combo]
    if not all(names):
      raise SweepError(f"every variant needs a name; got {names}")
    files = list(config.base_gin_files) + [f for v in combo for f in v.get("gin_files", ())]
    params = list(config.base_gin_params) + [p for v in combo for p in v.get("gin_params", ())]
    out.append({"name": "-".join(names), "gin_files": expand(files, corpus, root),
                "gin_params": expand(params, corpus, root)})
  if len({r["name"] for r in out}) != len(out):
    raise SweepError("two runs of the grid have the same name; give the variants distinct names")
  return out


def setup_steps(config, corpus: str, root: str) -> list[dict]:
  """The config's `setup` steps [{"name", "creates", "commands"}], `{corpus}`/`{root}` expanded."""
  steps = []
  for step in config.get("setup", None) or ():
    if not step.get("name") or not step.get("creates") or not step.get("commands"):
      raise SweepError(f"a setup step needs name, creates and commands; got {dict(step)}")
    steps.append({"name": step["name"], "creates": expand(step["creates"], corpus, root),
                  "commands": [expand(list(c), corpus, root) for c in step["commands"]]})
  return steps


def commands(run: dict, root: str, eval_args) -> list[list[str]]:
  """The run's `slm-train` and `slm-eval` command lines."""
  workdir = os.path.join(root, run["name"])
  train = ["slm-train", f"--workdir={workdir}"] + [f"--gin_file={f}" for f in run["gin_files"]] + [
      f"--gin_param={p}" for p in run["gin_params"]]
  evaluate = ["slm-eval", "--workdir", workdir] + list(eval_args) + [
      "--out", os.path.join(workdir, EVAL_FILE), "--no_progress"]
  return [train, evaluate]


def executable(cmd: list[str]) -> list[str]:
  """`slm-*` from this Python's environment when it has them (its bin/ need not be on PATH)."""
  local = os.path.join(os.path.dirname(sys.executable), cmd[0])
  return [local] + cmd[1:] if os.path.exists(local) else cmd


def execute(cmd: list[str], log_dir: str, what: str) -> None:
  """Runs `cmd`, its output shown and appended to LOG_DIR/<train|eval|export>.log; raises if it
  fails."""
  print(f"{PROG}: {shlex.join(cmd)}", file=sys.stderr, flush=True)
  os.makedirs(log_dir, exist_ok=True)
  log_path = os.path.join(log_dir, cmd[0].split("-")[-1] + ".log")
  with open(log_path, "a") as log:
    proc = subprocess.Popen(executable(cmd), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, bufsize=1)
    for line in proc.stdout:
      sys.stdout.write(line)
      log.write(line)
    if proc.wait():
      raise SweepError(f"{what}: `{cmd[0]}` failed (its output is above and in {log_path}); fix "
                       "it and rerun the sweep (finished runs are skipped)")


def collect(root: str, names, only_columns=None) -> tuple[list[dict], list[str]]:
  """Rows {run, step, params_M, train_min, metric: value} from each run's eval.json, train.log and
  sweep_time.json, and the metric columns (`only_columns` when given)."""
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
    log = os.path.join(root, name, "train.log")
    if os.path.exists(log):
      with open(log) as f:
        found = PARAMS_LINE.findall(f.read())
      if found:
        row["params_M"] = float(found[-1])
    timing = os.path.join(root, name, TIME_FILE)
    if os.path.exists(timing):
      with open(timing) as f:
        row["train_min"] = round(json.load(f)["train_s"] / 60, 1)
    rows.append(row)
  return rows, (list(only_columns) if only_columns else sorted(columns))


def markdown(rows: list[dict], columns: list[str]) -> str:
  def cell(v):
    return "" if v is None else (f"{v:.4g}" if isinstance(v, float) else str(v))
  head = ["run", "step", "params_M", "train_min"] + columns
  lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
  lines += ["| " + " | ".join(cell(r.get(c)) for c in head) + " |" for r in rows]
  return "\n".join(lines) + "\n"


def main(argv=None) -> int:
  p = argparse.ArgumentParser(prog=PROG, description=__doc__.split("\n")[0])
  p.add_argument("--config", default=None, help=f"a Python file with get_config() (default: "
                 f"{DEFAULT_CONFIG}, the Zipper ablation grid of docs/ablations.md)")
  p.add_argument("--root", required=True, help="folder of the runs (ROOT/NAME) and the table")
  p.add_argument("--corpus", default=None, help=f"the demo corpus folder, {{corpus}} in the config "
                 f"(default: ${CORPUS_ENV}, else {DEFAULT_CORPUS})")
  mode = p.add_mutually_exclusive_group()
  mode.add_argument("--print_jobs", action="store_true", help="print one shell line per run")
  mode.add_argument("--collect", action="store_true", help="only collect the table")
  args = p.parse_args(argv)
  corpus = os.path.abspath(args.corpus or os.environ.get(CORPUS_ENV) or DEFAULT_CORPUS)
  config = load_config(args.config, corpus)
  root = os.path.abspath(args.root)
  grid = runs(config, corpus, root)
  setup = setup_steps(config, corpus, root)
  eval_args = expand(list(config.eval_args), corpus, root)
  if args.print_jobs:
    for step in setup:
      print(" && ".join(shlex.join(c) for c in step["commands"]) + "   # setup, before the runs")
    for run in grid:
      print(" && ".join(shlex.join(c) for c in commands(run, root, eval_args)))
    return 0
  if not args.collect:
    if not os.path.isdir(corpus):
      raise SweepError(f"no demo corpus at {corpus}: build it (`make demo`) or pass --corpus DIR")
    for step in setup:
      if os.path.exists(step["creates"]):
        print(f"{PROG}: setup {step['name']}: done before, skipped", file=sys.stderr)
        continue
      for cmd in step["commands"]:
        execute(cmd, os.path.join(root, step["name"]), f"setup {step['name']}")
    for run in grid:
      workdir = os.path.join(root, run["name"])
      if os.path.exists(os.path.join(workdir, EVAL_FILE)):
        print(f"{PROG}: {run['name']}: done before, skipped", file=sys.stderr)
        continue
      train_cmd, eval_cmd = commands(run, root, eval_args)
      if not os.path.exists(os.path.join(workdir, TIME_FILE)):    # else trained before
        t0 = time.time()
        execute(train_cmd, workdir, f"run {run['name']}")
        atomic_write(os.path.join(workdir, TIME_FILE), json.dumps({"train_s": time.time() - t0}))
      execute(eval_cmd, workdir, f"run {run['name']}")
  rows, columns = collect(root, [r["name"] for r in grid], config.get("columns", None))
  table = markdown(rows, columns)
  os.makedirs(root, exist_ok=True)
  atomic_write(os.path.join(root, "results.md"), table)
  atomic_write(os.path.join(root, "results.json"), json.dumps(rows, indent=1) + "\n")
  print(table, end="")
  return 0


def run() -> None:
  from slm_jax.tools import cli_errors  # pylint: disable=import-outside-toplevel
  sys.exit(cli_errors.run_main(PROG, main))


if __name__ == "__main__":
  run()
