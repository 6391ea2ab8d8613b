"""slm-sweep: the grid, placeholders, setup steps, one job line per run, sequential runs (through a
stand-in CLI), the collected table, the default Zipper grid."""
import json
import os
import sys

import gin
import jax
import pytest
from flax import nnx

from slm_jax import configuration
from slm_jax.models import build
from slm_jax.tools import sweep

CONFIG = '''
import ml_collections
def get_config():
  c = ml_collections.ConfigDict()
  c.base_gin_files = ["runs/demo.gin"]
  c.base_gin_params = ["DEMO_CACHE = '{corpus}/c'"]
  c.axes = {"arch": [{"name": "shared"}, {"name": "zipper", "gin_files": ["ablations/zipper.gin"]}],
            "every": [{"name": "x1"}, {"name": "x2", "gin_params": ["text/TowerConfig.cross_every = 2"]}]}
  c.eval_args = ["--loss_cache", "{corpus}/c"]
  c.setup = [{"name": "pre", "creates": "{root}/pre/done",
              "commands": [["slm-train", "--workdir={root}/pre"], ["slm-export", "--out", "{root}/pre/done"]]}]
  return c
'''

# Stands in for slm-train / slm-export / slm-eval: prints what slm-train prints, writes what the
# others write (eval.json of made-up metrics; the export's output folder), fails on request.
FAKE_CLI = '''
import json, os, sys
prog, args = sys.argv[1], sys.argv[2:]
if os.environ.get("FAKE_FAIL") == prog:
  print("boom"); sys.exit(3)
if prog == "slm-train":
  print("slm-train: 1.25M parameters, mesh {}")
elif prog == "slm-export":
  os.makedirs(args[args.index("--out") + 1])
elif prog == "slm-eval":
  out = args[args.index("--out") + 1]
  name = os.path.basename(os.path.dirname(out))
  with open(out, "w") as f:
    json.dump({"step": 10, "loss": {"demo": {"loss/ce": 1.5 + len(name) / 100}},
               "asr": {"test": {"cer": 0.4, "wer": 0.6, "baseline": {"deranged_cer": 0.9}}},
               "tts": {"test": {"wer": 0.7, "resynthesis": {"wer": 0.2}}}}, f)
'''


def _config(tmp_path):
  path = tmp_path / "grid.py"
  path.write_text(CONFIG)
  return str(path)


@pytest.fixture
def fake_cli(tmp_path, monkeypatch):
  script = tmp_path / "fake_cli.py"
  script.write_text(FAKE_CLI)
  calls = []

  def executable(cmd):
    calls.append(cmd[0])
    return [sys.executable, str(script)] + cmd
  monkeypatch.setattr(sweep, "executable", executable)
  return calls


def test_grid_is_the_product_of_the_axes_with_placeholders_expanded(tmp_path):
  grid = sweep.runs(sweep.load_config(_config(tmp_path)), corpus="/data/corpus", root="/r")
  assert [r["name"] for r in grid] == ["shared-x1", "shared-x2", "zipper-x1", "zipper-x2"]
  z2 = grid[3]
  assert z2["gin_files"] == ["runs/demo.gin", "ablations/zipper.gin"]
  assert z2["gin_params"] == ["DEMO_CACHE = '/data/corpus/c'", "text/TowerConfig.cross_every = 2"]
  steps = sweep.setup_steps(sweep.load_config(_config(tmp_path)), "/data/corpus", "/r")
  assert steps[0]["creates"] == "/r/pre/done" and steps[0]["commands"][0][1] == "--workdir=/r/pre"


def test_the_default_grid_is_the_zipper_demo_sweep(tmp_path):
  corpus = tmp_path / "corpus"
  spec = corpus / "cache" / "demo_main" / "train" / "demo_asr"
  spec.mkdir(parents=True)
  (spec / "vocab_spec.json").write_text(json.dumps({"text_vocab_name": "sp:abc",
                                                     "speech_tokenizer_name": "dmel:def"}))
  config = sweep.load_config(None, str(corpus))          # configs/sweeps/zipper_demo.py
  grid = sweep.runs(config, str(corpus), "/r")
  assert [r["name"] for r in grid] == ["shared", "shared_bidir", "zipper", "zipper_x2", "zipper_x4",
                                       "zipper_x4_text_lm", "zipper_x4_text_lm_frozen"]
  assert "ModelConfig.bidirectional_speech_tags = ()" in grid[0]["gin_params"]   # like the Zipper's
  assert "ModelConfig.bidirectional_speech_tags = ()" not in grid[1]["gin_params"]
  for run in grid:
    assert f"DEMO_CACHE = '{corpus}/cache/demo_main'" in run["gin_params"]
    assert "UnifiedVocab.text_vocab_name = 'sp:abc'" in run["gin_params"]
  frozen = grid[-1]
  assert "ablations/zipper_frozen_text.gin" in frozen["gin_files"]
  assert "WarmStart.text_checkpoint = '/r/text_lm/export'" in frozen["gin_params"]
  (setup,) = sweep.setup_steps(config, str(corpus), "/r")
  assert setup["creates"] == "/r/text_lm/export/export_info.json"
  assert [c[0] for c in setup["commands"]] == ["slm-train", "slm-export"]


def test_the_full_schedule_grid_matches_parameters_and_reuses_the_short_grid(tmp_path):
  """configs/sweeps/zipper_demo_schedule.py: the demo's schedule as measured (960 steps, no
  120-step override, the demo's batch), Zipper towers of 4 x 128 that parse and come within 3% of
  the shared decoder's parameters."""
  corpus = tmp_path / "corpus"
  spec = corpus / "cache" / "demo_main" / "train" / "demo_asr"
  spec.mkdir(parents=True)
  (spec / "vocab_spec.json").write_text(json.dumps({"text_vocab_name": "sp:abc",
                                                     "speech_tokenizer_name": "dmel:def"}))
  path = os.path.join(configuration.CONFIGS_DIR, "sweeps", "zipper_demo_schedule.py")
  config = sweep.load_config(path, str(corpus))
  grid = sweep.runs(config, str(corpus), "/r")
  assert [r["name"] for r in grid] == ["shared_bidir", "zipper_128", "zipper_128_x2"]
  for run in grid:
    assert [p for p in run["gin_params"] if p.startswith(("TOTAL_STEPS", "BATCH_SIZE"))] == [
        "TOTAL_STEPS = 960"]
    assert "UnifiedVocab.text_vocab_name = 'sp:abc'" in run["gin_params"]
  assert "--no_joint" not in config.eval_args and "asr/test/joint/cer" in config.columns
  counts = []
  for run in grid[:2]:
    gin.clear_config()
    configuration.parse(run["gin_files"], [p for p in run["gin_params"] if "vocab_name" not in p])
    model = build.build_abstract(build.config_from_gin())
    counts.append(sum(x.size for x in jax.tree.leaves(nnx.state(model, nnx.Param))))
  gin.clear_config()
  assert abs(counts[1] / counts[0] - 1) < 0.03, counts


def test_print_jobs_gives_one_line_per_run_and_setup(tmp_path, capsys):
  assert sweep.main(["--config", _config(tmp_path), "--root", str(tmp_path / "r"),
                     "--print_jobs"]) == 0
  lines = capsys.readouterr().out.strip().split("\n")
  assert len(lines) == 5 and "# setup" in lines[0]
  assert "slm-train" in lines[4] and "--gin_file=ablations/zipper.gin" in lines[4]
  assert "slm-eval --workdir" in lines[4] and "zipper-x2/eval.json" in lines[4]


def test_runs_sequentially_skips_finished_and_tabulates(tmp_path, fake_cli, capsys):
  root, corpus = tmp_path / "r", tmp_path / "corpus"
  corpus.mkdir()
  os.makedirs(root / "shared-x1")
  (root / "shared-x1" / "eval.json").write_text(json.dumps({"step": 5, "asr": {"test": {"cer": 0.3}}}))
  args = ["--config", _config(tmp_path), "--root", str(root), "--corpus", str(corpus)]
  assert sweep.main(args) == 0
  assert fake_cli == ["slm-train", "slm-export"] + ["slm-train", "slm-eval"] * 3
  rows = json.loads((root / "results.json").read_text())
  assert [r["run"] for r in rows] == ["shared-x1", "shared-x2", "zipper-x1", "zipper-x2"]
  assert rows[0]["asr/test/cer"] == 0.3 and rows[2]["tts/test/wer"] == 0.7
  assert rows[2]["params_M"] == 1.25 and rows[2]["train_min"] >= 0.0
  assert "asr/test/baseline/deranged_cer" not in rows[2]
  assert "1.25M parameters" in (root / "zipper-x2" / "train.log").read_text()
  table = (root / "results.md").read_text()
  assert table.startswith("| run | step | params_M | train_min |") and "| zipper-x2 | 10 | 1.25 |" in table
  fake_cli.clear()
  assert sweep.main(args) == 0                                 # all done: nothing runs again
  assert fake_cli == []


def test_a_failed_run_is_a_clear_error_and_a_rerun_only_evaluates_it(tmp_path, fake_cli, monkeypatch):
  monkeypatch.setenv("FAKE_FAIL", "slm-eval")
  (tmp_path / "corpus").mkdir()
  args = ["--config", _config(tmp_path), "--root", str(tmp_path / "r"),
          "--corpus", str(tmp_path / "corpus")]
  with pytest.raises(sweep.SweepError, match="shared-x1.*slm-eval"):
    sweep.main(args)
  assert "boom" in (tmp_path / "r" / "shared-x1" / "eval.log").read_text()
  monkeypatch.delenv("FAKE_FAIL")
  fake_cli.clear()
  assert sweep.main(args) == 0          # setup done, shared-x1 trained: only its evaluation runs
  assert fake_cli == ["slm-eval"] + ["slm-train", "slm-eval"] * 3


def test_a_missing_corpus_is_a_clear_error(tmp_path):
  with pytest.raises(sweep.SweepError, match="no demo corpus"):
    sweep.main(["--config", _config(tmp_path), "--root", str(tmp_path / "r"),
                "--corpus", str(tmp_path / "nowhere")])
