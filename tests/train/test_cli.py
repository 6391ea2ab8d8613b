"""slm-train end to end (subprocess), and two processes over loopback == one process."""
import os
import socket
import subprocess
import sys

import numpy as np
import pytest

from slm_jax import configuration
from slm_jax.tools import plot_metrics
from slm_jax.train import loop

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TINY = [
    "ModelConfig.num_layers=1", "ModelConfig.embed_dim=32", "ModelConfig.mlp_dim=64",
    "ModelConfig.head_dim=8", "ModelConfig.vocab_pad_multiple=8", "UnifiedVocab.text_size=64",
    "UnifiedVocab.speech_codebook_sizes=(32,)", "SyntheticTask.max_len=6", "TOTAL_STEPS=4",
    "BATCH_SIZE=8", "SEQ_LEN=32", "train.eval_every=2", "train.eval_batches=1",
    "CheckpointOptions.save_every=2", "learning_rate_schedule.warmup_steps=1",
    "learning_rate_schedule.peak_learning_rate=1e-2",
]
FILES = ["models/tiny.gin", "runs/pretrain.gin"]
# A stated peak spares each training process the host's matmul measurement (metrics.peak_flops);
# test_slm_train_end_to_end still measures it.
STATED_PEAK = "peak_flops.override_per_device=1e11"


def _cli(workdir, params=(), devices=8, extra=(), **popen):
  env = dict(os.environ, JAX_PLATFORMS="cpu", JAX_NUM_CPU_DEVICES=str(devices),
             TF_CPP_MIN_LOG_LEVEL="3")
  cmd = [sys.executable, "-m", "slm_jax.tools.train", f"--workdir={workdir}", "--no_progress"]
  cmd += [f"--gin_file={f}" for f in FILES] + [f"--gin_param={p}" for p in list(TINY) + list(params)]
  return subprocess.Popen(cmd + list(extra), cwd=REPO, env=env, stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, text=True, **popen)


def test_slm_train_end_to_end(tmp_path):
  proc = _cli(tmp_path, ["make_mesh.ici_shape={'fsdp': -1}"])
  out, _ = proc.communicate(timeout=300)
  assert proc.returncode == 0, out
  assert "done at step 4" in out
  assert sorted(os.listdir(tmp_path / "checkpoints")) == ["2", "4"]
  gin_text = (tmp_path / "operative_config.gin").read_text()
  for binding in ("TOTAL_STEPS = 4", "train.total_steps = %TOTAL_STEPS", "ModelConfig.embed_dim = 32",
                  "OptimizerOptions.weight_decay", "CheckpointOptions.save_every = 2",
                  "SyntheticTask.max_len = 6"):
    assert binding in gin_text, binding
  scalars = plot_metrics.read_scalars(str(tmp_path / "tensorboard"))
  assert [s for s, _ in scalars["train/loss"]] == [1, 2, 3, 4]
  assert [s for s, _ in scalars["eval/loss/ce"]] == [2, 4]
  for tag in ("train/grad_norm", "train/learning_rate", "train/loss/text_ce", "train/tokens_per_s",
              "train/mfu", "train/step_time_s"):
    assert tag in scalars, tag
  png = plot_metrics.plot(str(tmp_path / "tensorboard"), str(tmp_path / "loss.png"))
  assert os.path.getsize(png) > 1000


def test_slm_train_reports_config_errors():
  proc = _cli("/tmp/unused", ["train.no_such_option=1"])
  out, _ = proc.communicate(timeout=120)
  assert proc.returncode == 2 and "no_such_option" in out and "Check the spelling" in out


def _free_port():
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


@pytest.mark.slow
@pytest.mark.multiprocess
def test_two_processes_train_like_one(tmp_path):
  mesh = ["make_mesh.ici_shape={'data': 2, 'fsdp': -1}"]
  port = _free_port()
  procs = [_cli(tmp_path / "two", mesh + [STATED_PEAK], devices=4, extra=[
      f"--coordinator_address=127.0.0.1:{port}", "--num_processes=2", f"--process_id={i}"])
           for i in range(2)]
  outs = [p.communicate(timeout=600)[0] for p in procs]
  assert all(p.returncode == 0 for p in procs), outs
  # the same run in this process, on 8 local devices
  configuration.parse(FILES, TINY + mesh, finalize=False)
  reference = loop.train(str(tmp_path / "one"), progress=False)
  two = plot_metrics.read_scalars(str(tmp_path / "two" / "tensorboard"))
  np.testing.assert_allclose([v for _, v in two["train/loss"]],
                             [h["loss"] for h in reference["history"]], rtol=1e-5)
  np.testing.assert_allclose([v for _, v in two["eval/loss/ce"]],
                             [e["loss/ce"] for e in reference["eval"]], rtol=1e-5)
  assert sorted(os.listdir(tmp_path / "two" / "checkpoints")) == ["2", "4"]


@pytest.mark.slow
def test_kill_at_any_moment_then_rerun_continues_bitwise(tmp_path):
  """SIGKILL mid-run (checkpoints every step, so usually mid-save), rerun: same loss curve."""
  import signal
  import time
  params = ["TOTAL_STEPS=10", "CheckpointOptions.save_every=1", "train.eval_every=0", STATED_PEAK]
  ref = _cli(tmp_path / "ref", params)
  out, _ = ref.communicate(timeout=600)
  assert ref.returncode == 0, out
  cut = _cli(tmp_path / "cut", params)
  ckpts = tmp_path / "cut" / "checkpoints"
  deadline = time.time() + 300
  while time.time() < deadline and cut.poll() is None:
    if ckpts.exists() and len([d for d in os.listdir(ckpts) if d.isdigit()]) >= 3:
      break
    time.sleep(0.05)
  os.kill(cut.pid, signal.SIGKILL)
  cut.communicate()
  killed_at = sorted(int(d) for d in os.listdir(ckpts) if d.isdigit())
  assert killed_at and killed_at[-1] < 10
  again = _cli(tmp_path / "cut", params)
  out, _ = again.communicate(timeout=600)
  assert again.returncode == 0, out
  expected = plot_metrics.read_scalars(str(tmp_path / "ref" / "tensorboard"))["train/loss"]
  got = plot_metrics.read_scalars(str(tmp_path / "cut" / "tensorboard"))["train/loss"]
  assert got == expected
