"""Every command line tool ends a known error in one message and exit code 2, without a traceback."""
import os
import subprocess
import sys

import pytest

from slm_jax.errors import SlmError
from slm_jax.tools import cli_errors

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TINY_RUN = ["--gin_file=models/tiny.gin", "--gin_file=runs/pretrain.gin", "--no_progress"] + [
    f"--gin_param={p}" for p in (
        "ModelConfig.num_layers=1", "ModelConfig.embed_dim=32", "ModelConfig.mlp_dim=64",
        "ModelConfig.head_dim=8", "UnifiedVocab.text_size=64", "UnifiedVocab.speech_codebook_sizes=(32,)",
        "SyntheticTask.max_len=6", "TOTAL_STEPS=1", "BATCH_SIZE=8", "SEQ_LEN=32", "train.eval_every=0",
        "peak_flops.override_per_device=1e11")]   # no measuring of the host's matmul peak


def _run(module, *args, cwd=REPO):
  env = dict(os.environ, JAX_PLATFORMS="cpu", JAX_NUM_CPU_DEVICES="1", TF_CPP_MIN_LOG_LEVEL="3")
  return subprocess.run([sys.executable, "-m", module, *args], cwd=cwd, env=env,
                        capture_output=True, text=True, timeout=600)


def _assert_one_clear_error(proc, prog, *words):
  assert proc.returncode == 2, (proc.returncode, proc.stdout[-2000:], proc.stderr[-4000:])
  assert "Traceback" not in proc.stderr, proc.stderr
  ours = [line for line in proc.stderr.splitlines() if line.startswith(f"{prog}:")]
  assert len(ours) == 1 and ours[0].startswith(f"{prog}: error: "), proc.stderr
  for word in words:
    assert word in proc.stderr, (word, proc.stderr)


def test_run_main_turns_known_errors_into_exit_code_2(capsys):
  def fails(error):
    def main():
      raise error
    return main
  assert cli_errors.run_main("tool", lambda: 0) == 0
  assert cli_errors.run_main("tool", lambda: None) == 0
  assert cli_errors.run_main("tool", lambda: 3) == 3

  class BadInput(SlmError, ValueError):
    pass

  assert cli_errors.run_main("tool", fails(BadInput("the vocabulary differs; retrain"))) == 2
  assert capsys.readouterr().err == "tool: error: the vocabulary differs; retrain\n"
  missing = FileNotFoundError(2, "No such file or directory", "/no/such/file.txt")
  assert cli_errors.run_main("tool", fails(missing)) == 2
  assert capsys.readouterr().err == "tool: error: No such file or directory: /no/such/file.txt\n"
  in_gin = BadInput("shape (1, 32) differs\n  In call to configurable 'train' (<function train at 0x7f>)")
  assert cli_errors.run_main("tool", fails(in_gin)) == 2
  assert capsys.readouterr().err == "tool: error: shape (1, 32) differs\n"
  with pytest.raises(KeyError):  # a bug keeps its traceback
    cli_errors.run_main("tool", fails(KeyError("bug")))


def test_slm_train_gin_typo():
  proc = _run("slm_jax.tools.train", "--workdir=/tmp/unused", *TINY_RUN,
              "--gin_param=train.no_such_option=1")
  _assert_one_clear_error(proc, "slm-train", "no_such_option", "Check the spelling")


@pytest.mark.slow
def test_slm_train_over_a_workdir_of_another_model_shape(tmp_path):
  first = _run("slm_jax.tools.train", f"--workdir={tmp_path}", *TINY_RUN)
  assert first.returncode == 0, first.stderr[-4000:]
  assert os.listdir(tmp_path / "checkpoints")
  proc = _run("slm_jax.tools.train", f"--workdir={tmp_path}", *TINY_RUN,
              "--gin_param=ModelConfig.embed_dim=48")
  _assert_one_clear_error(proc, "slm-train", "checkpoint")


def test_slm_data_missing_input(tmp_path):
  proc = _run("slm_jax.tools.data", "train-spm", "--input", str(tmp_path / "missing.txt"),
              "--vocab_size", "64", "--out", str(tmp_path / "spm"))
  _assert_one_clear_error(proc, "slm-data", "missing.txt")


def test_plot_metrics_missing_workdir(tmp_path):
  proc = _run("slm_jax.tools.plot_metrics", f"--workdir={tmp_path / 'no_run'}")
  _assert_one_clear_error(proc, "plot_metrics", "no_run")


def test_demo_gin_typo(tmp_path):
  proc = _run("slm_jax.tools.demo", "--synthetic", f"--workdir={tmp_path}",
              "--gin_param=train.no_such_option=1")
  _assert_one_clear_error(proc, "demo", "no_such_option")
