"""`slm-data`: subcommand discovery, --help, and build-demo through a real subprocess."""
import json
import os
import subprocess
import sys
import types

import pytest

from slm_jax.tools import data as data_cli


def test_help_lists_build_demo_and_notes_missing_modules(monkeypatch, capsys):
  monkeypatch.setattr(data_cli, "_SUBCOMMAND_MODULES", ("slm_jax.data.no_such_stage.cli",))
  with pytest.raises(SystemExit) as e:
    data_cli.main(["--help"])
  assert e.value.code == 0
  out = capsys.readouterr().out
  assert "build-demo" in out
  assert "slm_jax.data.no_such_stage.cli (not there yet)" in out


def test_stage_modules_add_their_subcommands(monkeypatch, capsys):
  stage = types.ModuleType("fake_stage_cli")

  def add_parser(subparsers):
    p = subparsers.add_parser("shout", help="print a word loudly")
    p.add_argument("--word", default="hi")
    p.set_defaults(func=lambda args: print(args.word.upper()) or 0)

  stage.add_parser = add_parser
  monkeypatch.setitem(sys.modules, "fake_stage_cli", stage)
  monkeypatch.setattr(data_cli, "_SUBCOMMAND_MODULES", ("fake_stage_cli",))
  assert data_cli.main(["shout", "--word", "corpus"]) == 0
  assert capsys.readouterr().out.strip() == "CORPUS"


def test_no_command_prints_help(monkeypatch, capsys):
  monkeypatch.setattr(data_cli, "_SUBCOMMAND_MODULES", ())
  assert data_cli.main([]) == 2
  assert "build-demo" in capsys.readouterr().out


def test_build_demo_subprocess(tmp_path, repo_root):
  out = tmp_path / "demo"
  env = dict(os.environ, JAX_PLATFORMS="cpu", TF_CPP_MIN_LOG_LEVEL="3")
  cmd = [sys.executable, "-m", "slm_jax.tools.data",
         "--gin_param", "build_demo_corpus.split_fractions = (1.0, 0.0, 0.0)",
         "build-demo", "--out", str(out), "--max_sentences", "2", "--voices_per_sentence", "1",
         "--voices", "flite:rms", "--workers", "1", "--no_real", "--quiet"]
  proc = subprocess.run(cmd, cwd=repo_root, env=env, capture_output=True, text=True,
                        timeout=300, check=False)
  assert proc.returncode == 0, proc.stderr[-2000:]
  assert "demo corpus in" in proc.stdout
  with open(out / "build_info.json") as f:
    info = json.load(f)
  assert info["splits"]["train"]["utterances"] == 2  # gin put every sentence in train
  assert info["speakers"] == {"flite-rms": 2} and "test_real" not in info["splits"]
  assert len(list((out / "audio" / "train").glob("*.wav"))) == 2


def test_build_demo_bad_voice_is_a_clear_error(tmp_path, monkeypatch):
  monkeypatch.setattr(data_cli, "_SUBCOMMAND_MODULES", ())
  with pytest.raises(SystemExit, match="bad voice spec 'flite:kal'"):
    data_cli.main(["build-demo", "--out", str(tmp_path / "x"), "--voices", "flite:kal"])
  assert not (tmp_path / "x").exists()
