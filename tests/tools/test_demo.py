"""The main job's orchestrator (`make demo`), on its synthetic-task path with a small model."""
import os
import shutil

import gin

from slm_jax.tools import demo

SMALL = ["TOTAL_STEPS = 4", "train.eval_every = 2", "CheckpointOptions.save_every = 2",
         "train.log_every = 1", "ModelConfig.num_layers = 1", "ModelConfig.embed_dim = 32",
         "ModelConfig.mlp_dim = 64", "ModelConfig.head_dim = 8", "SEQ_LEN = 32",
         "make_mesh.ici_shape = {'data': 1, 'fsdp': -1}"]


def _demo(workdir):
  gin.clear_config()
  args = ["--synthetic", "--workdir", str(workdir)]
  for p in SMALL:
    args += ["--gin_param", p]
  try:
    return demo.main(args)
  finally:
    gin.clear_config()


def test_demo_trains_summarizes_and_a_rerun_does_nothing(tmp_path, capsys):
  assert _demo(tmp_path / "run") == 0
  out = capsys.readouterr().out
  assert "trained steps 1..4" in out and "held-out loss" in out
  assert os.path.exists(tmp_path / "run" / "loss.png")
  assert sorted(os.listdir(tmp_path / "run" / "checkpoints")) == ["2", "4"]
  assert _demo(tmp_path / "run") == 0
  assert "already trained to step 4" in capsys.readouterr().out


def test_the_summary_names_a_tensorboard_that_runs(tmp_path, monkeypatch):
  # `make demo` installs the tensorboard extra into the venv it runs the demo with.
  exe = demo.tensorboard_command("logs").split()[0]
  assert os.access(exe, os.X_OK) or shutil.which(exe), exe
  monkeypatch.setenv("PATH", "")
  bin_dir = tmp_path / "bin"
  bin_dir.mkdir()
  assert "not installed: pip install" in demo.tensorboard_command("logs", str(bin_dir))
  (bin_dir / "tensorboard").write_text("")
  assert demo.tensorboard_command("logs", str(bin_dir)) == f"{bin_dir / 'tensorboard'} --logdir logs"
