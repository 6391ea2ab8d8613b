"""jax.export artifacts: the loader, without slm_jax's model code, generates what the engine does."""
import json
import os
import subprocess
import sys

import jax
import numpy as np
import pytest
from safetensors.numpy import load_file

from slm_jax.export import jax_export
from slm_jax.export.exported_runner import ExportedArtifactError, ExportedRunner
from slm_jax.inference import sampling
from slm_jax.inference.engine import Engine
from slm_jax.models.build import build
from slm_jax.unified_vocab import UnifiedVocab

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "inference"))
from test_engine import MAX_LEN, prompts, run_engine, tiny  # noqa: E402

LENGTHS = [3, 9, 17, 6, 20]          # more prompts than the runner's slots: slots are reused
MAX_NEW = 12

# Runs in a fresh interpreter: only the loader is imported, then tokens go out as JSON.
LOADER_SCRIPT = """
import json, sys
import numpy as np
from slm_jax.export.exported_runner import ExportedRunner
directory, slots, max_new = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
prompts = [np.asarray(p, np.int32) for p in json.loads(sys.stdin.read())]
runner = ExportedRunner(directory, slots=slots)
outs = runner.generate_all(prompts, max_new_tokens=max_new)
print(json.dumps({"tokens": [t.tolist() for t, _ in outs],
                  "modules": sorted(m for m in sys.modules if m.startswith(("slm_jax", "flax")))}))
"""


@pytest.fixture(scope="module")
def exported_k1(tmp_path_factory):
  """A tiny K = 1 model's engine (4 slots), its artifacts for cpu/cuda/tpu, its greedy outputs."""
  model = build(tiny(), seed=1)
  engine = Engine(model, slots=4, max_length=MAX_LEN, steps_per_call=5, stop_ids=())
  directory = str(tmp_path_factory.mktemp("k1"))
  jax_export.export_engine(engine, directory)
  ps = prompts(model.cfg.vocab, LENGTHS)
  expected = run_engine(engine, ps[:4], max_new=MAX_NEW) + run_engine(engine, ps[4:], max_new=MAX_NEW)
  return engine, directory, ps, [tokens for tokens, _ in expected]


def test_loader_without_model_code_generates_the_engines_tokens(exported_k1):
  """A subprocess that imports only the loader; 3 slots (the engine had 4: the slot dim is
  symbolic), 5 prompts of 4 lengths in 2 buckets."""
  _, directory, ps, expected = exported_k1
  env = dict(os.environ, JAX_PLATFORMS="cpu")
  result = subprocess.run([sys.executable, "-c", LOADER_SCRIPT, directory, "3", str(MAX_NEW)],
                          input=json.dumps([p.tolist() for p in ps]), capture_output=True,
                          text=True, env=env, timeout=300, check=False)
  assert result.returncode == 0, result.stderr[-3000:]
  out = json.loads(result.stdout.strip().splitlines()[-1])
  assert out["tokens"] == expected
  assert [len(t) for t in out["tokens"]] == [MAX_NEW] * len(ps)
  assert "slm_jax.models" not in out["modules"] and "slm_jax.inference" not in out["modules"]
  assert not [m for m in out["modules"] if m.startswith("flax")], out["modules"]


def test_artifact_directory_contents(exported_k1):
  engine, directory, _, _ = exported_k1
  with open(os.path.join(directory, jax_export.MANIFEST)) as f:
    manifest = json.load(f)
  assert manifest["platforms"] == ["cpu", "cuda", "tpu"]
  assert manifest["state"]["cache/stacks/decoder/k_YBGSE"]["shape"] == [2, "b", 2, MAX_LEN, 8]
  assert manifest["state"]["cache/stacks/decoder/k_YBGSE"]["slot_axis"] == 1
  assert manifest["state"]["token_B"] == {"shape": ["b"], "dtype": "int32", "slot_axis": 0}
  assert manifest["prefill_inputs"]["tokens_1L"]["shape"] == [1, "l"]
  assert manifest["step_outputs"]["tokens_NB"]["shape"] == [5, "b"]
  assert manifest["sampling"]["temperature"] == 0.0 and manifest["stop_ids"] == []
  assert UnifiedVocab.load(os.path.join(directory, manifest["vocab_spec"])) == engine.vocab
  params = load_file(os.path.join(directory, manifest["params_file"]))
  assert sorted(params) == sorted(manifest["params"])
  assert all(isinstance(n, str) and "/" in n for n in params)          # a flat dict of arrays
  np.testing.assert_array_equal(params["final_norm/scale"],
                                np.asarray(engine.params["final_norm"]["scale"].value))
  for name, filename in manifest["files"].items():
    with open(os.path.join(directory, filename), "rb") as f:
      exp = jax.export.deserialize(bytearray(f.read()))
    assert exp.platforms == ("cpu", "cuda", "tpu"), name


@pytest.mark.slow
def test_sampled_k3_bf16_round_trip(tmp_path):
  """K = 3 speech channels, bf16 parameters and cache, temperature/top-k sampling: the same
  per-request seeds give the same tokens and codes as the engine."""
  model = build(tiny(k_sizes=(24, 16, 8), param_dtype="bfloat16"), seed=2)
  engine = Engine(model, slots=2, max_length=MAX_LEN, steps_per_call=4, stop_ids=(),
                  cache_dtype="bfloat16",
                  sampling_config=sampling.SamplingConfig(temperature=1.0, top_k=10))
  jax_export.export_engine(engine, str(tmp_path), platforms=("cpu",))
  ps = prompts(model.cfg.vocab, [5, 11])
  rng = np.random.default_rng(3)
  codes = [rng.integers(0, 8, (p.size, 2)).astype(np.int32) for p in ps]
  expected = run_engine(engine, ps, max_new=9, codes=codes, seeds=[4, 7])
  runner = ExportedRunner(str(tmp_path))
  got = runner.generate_all(ps, max_new_tokens=9, seeds=[4, 7], prompt_codes=codes)
  for (tokens, ch), (got_tokens, got_codes) in zip(expected, got):
    assert got_tokens.tolist() == tokens
    np.testing.assert_array_equal(got_codes, np.stack(ch))
  assert len(set(got[0][0].tolist())) > 1                    # really sampled
  assert load_file(str(tmp_path / "params.safetensors"))["final_norm/scale"].dtype.name == "bfloat16"


def test_errors(tmp_path, exported_k1):
  engine, directory, _, _ = exported_k1
  with pytest.raises(ExportedArtifactError, match="no manifest.json"):
    ExportedRunner(str(tmp_path))
  with pytest.raises(jax_export.JaxExportError, match="platforms"):
    jax_export.export_engine(engine, str(tmp_path), platforms=("rocm_typo",))
  runner = ExportedRunner(directory, slots=1)
  with pytest.raises(ExportedArtifactError, match=f"cache holds {MAX_LEN}"):
    runner.prefill(np.full(MAX_LEN, 5))
  with pytest.raises(ExportedArtifactError, match="prompt ids"):
    runner.prefill([2, engine.vocab.size])
