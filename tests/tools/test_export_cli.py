"""slm-export end to end in a subprocess: an int8 export that loads, and known errors (exit 2)."""
import json
import os
import subprocess
import sys

import jax
import numpy as np

from slm_jax.export import inference_checkpoint as ic

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.join(REPO, "tests", "export"))
from inference_testing import train_workdir  # noqa: E402  pylint: disable=wrong-import-position


def _cli(*args):
  env = dict(os.environ, JAX_PLATFORMS="cpu", TF_CPP_MIN_LOG_LEVEL="3")
  return subprocess.run([sys.executable, "-m", "slm_jax.tools.export", *map(str, args)], cwd=REPO,
                        env=env, capture_output=True, text=True, timeout=300)


def test_slm_export_end_to_end(tmp_path):
  workdir = tmp_path / "run"
  _, params, _ = train_workdir(str(workdir))
  spm = tmp_path / "spm.model"
  spm.write_bytes(b"spm")
  out = tmp_path / "export"
  proc = _cli("--workdir", workdir, "--out", out, "--dtype", "bfloat16", "--quantize", "int8",
              "--text_tokenizer", spm)
  assert proc.returncode == 0, proc.stdout + proc.stderr
  assert f"step 1 of {workdir} -> {out}" in proc.stdout and "int8 weights" in proc.stdout
  assert "tokenizers: text tokenizers/spm.model" in proc.stdout
  info = json.loads((out / "export_info.json").read_text())
  assert info["dtype"] == "bfloat16" and info["quantization"] == "int8" and info["step"] == 1
  model, _, _ = ic.load_inference_checkpoint(str(out))
  up = np.asarray(model.decoder.blocks.mlp.up.kernel[...], np.float32)
  want = params["decoder"]["blocks"]["mlp"]["up"]["kernel"]
  # int8 with per-channel scales: within half a quantization step (max|w| / 254), plus the
  # bfloat16 rounding of the dequantized weight (8 bits of mantissa: |w| / 256)
  assert np.abs(up - want).max() <= np.abs(want).max() * (1 / 254 + 1 / 256)
  jax.clear_caches()


def test_slm_export_errors_are_one_line_and_exit_2(tmp_path):
  proc = _cli("--workdir", tmp_path / "missing", "--out", tmp_path / "out")
  assert proc.returncode == 2, proc.stderr
  assert "slm-export: error: no training run at" in proc.stderr
  assert "Traceback" not in proc.stderr + proc.stdout
  assert not (tmp_path / "out").exists()
  (tmp_path / "empty").mkdir()
  proc = _cli("--workdir", tmp_path / "empty", "--out", tmp_path / "out")
  assert proc.returncode == 2 and "has no complete checkpoint" in proc.stderr
  assert "Traceback" not in proc.stderr
