"""slm-sweep: the grid, one job line per run, sequential runs (stubbed), the collected table."""
import json
import os

import pytest

from slm_jax.tools import sweep

CONFIG = '''
import ml_collections
def get_config():
  c = ml_collections.ConfigDict()
  c.base_gin_files = ["runs/demo.gin"]
  c.base_gin_params = ["DEMO_CACHE = '/c'"]
  c.axes = {"arch": [{"name": "shared"}, {"name": "zipper", "gin_files": ["ablations/zipper.gin"]}],
            "every": [{"name": "x1"}, {"name": "x2", "gin_params": ["text/TowerConfig.cross_every = 2"]}]}
  c.eval_args = ["--loss_cache", "/c"]
  return c
'''


def _config(tmp_path):
  path = tmp_path / "grid.py"
  path.write_text(CONFIG)
  return str(path)


def test_grid_is_the_product_of_the_axes(tmp_path):
  grid = sweep.runs(sweep.load_config(_config(tmp_path)))
  assert [r["name"] for r in grid] == ["shared-x1", "shared-x2", "zipper-x1", "zipper-x2"]
  z2 = grid[3]
  assert z2["gin_files"] == ["runs/demo.gin", "ablations/zipper.gin"]
  assert z2["gin_params"] == ["DEMO_CACHE = '/c'", "text/TowerConfig.cross_every = 2"]
  assert len(sweep.runs(sweep.default_config())) == 5


def test_print_jobs_gives_one_line_per_run(tmp_path, capsys):
  assert sweep.main(["--config", _config(tmp_path), "--root", str(tmp_path / "r"), "--print_jobs"]) == 0
  lines = capsys.readouterr().out.strip().split("\n")
  assert len(lines) == 4
  assert "slm-train" in lines[3] and "--gin_file=ablations/zipper.gin" in lines[3]
  assert "slm-eval --workdir" in lines[3] and "zipper-x2/eval.json" in lines[3]


def test_runs_sequentially_skips_finished_and_tabulates(tmp_path, monkeypatch, capsys):
  root = tmp_path / "r"
  calls = []

  class Done:
    returncode = 0

  def fake_run(cmd, check):
    calls.append(cmd[0])
    if cmd[0] == "slm-eval":
      out = cmd[cmd.index("--out") + 1]
      os.makedirs(os.path.dirname(out), exist_ok=True)
      name = os.path.basename(os.path.dirname(out))
      with open(out, "w") as f:
        json.dump({"step": 10, "loss": {"demo": {"loss/ce": 1.5 + len(name) / 100}},
                   "asr": {"test": {"cer": 0.4, "wer": 0.6, "baseline": {"deranged_cer": 0.9}}},
                   "tts": {"test": {"wer": 0.7, "resynthesis": {"wer": 0.2}}}}, f)
    return Done()

  monkeypatch.setattr(sweep.subprocess, "run", fake_run)
  os.makedirs(root / "shared-x1")
  (root / "shared-x1" / "eval.json").write_text(json.dumps({"step": 5, "asr": {"test": {"cer": 0.3}}}))
  assert sweep.main(["--config", _config(tmp_path), "--root", str(root)]) == 0
  assert calls == ["slm-train", "slm-eval"] * 3          # the finished run is skipped
  rows = json.loads((root / "results.json").read_text())
  assert [r["run"] for r in rows] == ["shared-x1", "shared-x2", "zipper-x1", "zipper-x2"]
  assert rows[0]["asr/test/cer"] == 0.3 and rows[2]["tts/test/wer"] == 0.7
  assert "asr/test/baseline/deranged_cer" not in rows[2]
  table = (root / "results.md").read_text()
  assert table.startswith("| run | step |") and "zipper-x2 | 10 |" in table


def test_a_failed_run_is_a_clear_error(tmp_path, monkeypatch):
  class Failed:
    returncode = 1
  monkeypatch.setattr(sweep.subprocess, "run", lambda cmd, check: Failed())
  with pytest.raises(sweep.SweepError, match="shared-x1"):
    sweep.main(["--config", _config(tmp_path), "--root", str(tmp_path / "r")])
