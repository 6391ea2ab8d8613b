"""Inference checkpoints: export -> load gives the training model's logits (f32 exact, bf16 and
int8 within stated tolerances), onto another mesh; clear errors; atomic replacement."""
import dataclasses
import json
import os
import shutil

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from slm_jax.export import inference_checkpoint as ic
from slm_jax.export import quantize as quant
from slm_jax.inference.engine import Engine
from slm_jax.models import build
from slm_jax.unified_vocab import BOS_ID, VocabMismatchError
from inference_testing import batches, mesh_of, train_workdir

# Stated tolerances, relative to the largest |logit| of the f32 model on the same batch.
BF16_REL_TOL = 2e-2
INT8_REL_TOL = 1e-1


@pytest.fixture(scope="module")
def run(tmp_path_factory):
  """A tiny run's checkpoint (train state sharded FSDP over 8 devices) and its exports."""
  root = tmp_path_factory.mktemp("export")
  workdir = str(root / "run")
  cfg, params, _ = train_workdir(workdir)
  spm = root / "spm.model"
  spm.write_bytes(b"not really a sentencepiece model")
  exports = {}
  for name, kw in {"f32": dict(dtype="float32"), "bf16": dict(dtype="bfloat16"),
                   "int8": dict(dtype="float32", quantize="int8")}.items():
    exports[name] = ic.export_inference_checkpoint(workdir, str(root / name),
                                                   text_tokenizer=str(spm), **kw)
  (batch,) = batches(cfg, mesh_of({"data": 1}), split="eval", seed=3)
  batch = {k: np.asarray(v) for k, v in batch.items()}
  return dict(root=root, workdir=workdir, cfg=cfg, params=params, exports=exports, batch=batch)


def _model(cfg, params):
  graphdef, state = nnx.split(build.build_abstract(cfg), nnx.Param)
  state.replace_by_pure_dict(jax.tree.map(jnp.asarray, params))
  return nnx.merge(graphdef, state)


def _logits(model, batch):
  """float32 logits of the vocabulary's ids (the padding ids' masked values left out)."""
  logits = _jitted_logits(model, jnp.asarray(batch["tokens"]), jnp.asarray(batch["segment_ids"]),
                          jnp.asarray(batch["positions"]))
  return np.asarray(logits, np.float32)[..., :model.cfg.vocab.size]


@nnx.jit
def _jitted_logits(model, tokens, segment_ids, positions):
  """One compiled program (eagerly, every op of the model would compile on its own)."""
  return model.logits(tokens, segment_ids, positions)[0]


def _perplexity(logits, batch):
  logp = jax.nn.log_softmax(jnp.asarray(logits), axis=-1)
  nll = -np.take_along_axis(np.asarray(logp), batch["targets"][..., None], axis=-1)[..., 0]
  w = batch["loss_weights"]
  return float(np.exp((nll * w).sum() / w.sum()))


def test_export_holds_parameters_config_vocab_and_tokenizers(run):
  out = run["exports"]["f32"]["directory"]
  assert sorted(os.listdir(out)) == sorted([
      "export_info.json", "model_config.json", "operative_config.gin", "params", "tokenizers",
      "vocab_spec.json"])
  info = json.load(open(os.path.join(out, "export_info.json")))
  assert info["step"] == 1 and info["dtype"] == "float32" and info["quantization"] is None
  assert info["param_count"] == build.param_count(_model(run["cfg"], run["params"]))
  assert info["param_bytes"] == 4 * info["param_count"]
  meta = ic._saved_metadata(os.path.join(out, "params"))  # pylint: disable=protected-access
  assert list(meta) == ["params"]        # no optimizer state, step counters or data state
  assert info["tokenizers"][0]["path"] == "tokenizers/spm.model"
  assert os.path.exists(os.path.join(out, "tokenizers", "spm.model"))
  assert "get_text_vocabulary.path = 'tokenizers/spm.model'" in open(
      os.path.join(out, "operative_config.gin")).read()
  assert f"get_text_vocabulary.path = '{out}/tokenizers/spm.model'" in ic.resolved_gin(out)
  assert not [d for d in os.listdir(run["root"]) if ".partial-" in d or ".old-" in d]


def test_f32_round_trip_is_exact_and_restores_onto_another_mesh(run):
  out = run["exports"]["f32"]["directory"]
  model, vocab, info = ic.load_inference_checkpoint(out)
  assert vocab == run["cfg"].vocab and info["step"] == 1
  loaded = nnx.state(model, nnx.Param).to_pure_dict()
  jax.tree.map(np.testing.assert_array_equal, jax.device_get(loaded), run["params"])
  reference = _logits(_model(run["cfg"], run["params"]), run["batch"])
  np.testing.assert_array_equal(_logits(model, run["batch"]), reference)
  # trained with fsdp=8; restored onto tensor=2 x data=4 with the logical-axis shardings
  sharded, _, _ = ic.load_inference_checkpoint(out, mesh=mesh_of({"tensor": 2, "data": 4}))
  kernel = sharded.decoder.blocks.mlp.up.kernel[...]
  assert kernel.sharding.mesh.shape["tensor"] == 2 and "tensor" in str(kernel.sharding.spec)
  np.testing.assert_array_equal(np.asarray(kernel), run["params"]["decoder"]["blocks"]["mlp"]["up"]["kernel"])
  np.testing.assert_allclose(_logits(sharded, run["batch"]), reference, rtol=1e-5, atol=1e-5)


def test_a_relative_checkpoint_path_loads(run, monkeypatch):
  """Orbax reads no metadata from a relative path: `slm-eval --checkpoint runs/x/export` from
  the project root once failed with a TypeError."""
  out = run["exports"]["f32"]["directory"]
  monkeypatch.chdir(os.path.dirname(out))
  model, _, _ = ic.load_inference_checkpoint(os.path.basename(out))
  np.testing.assert_array_equal(_logits(model, run["batch"]),
                                _logits(_model(run["cfg"], run["params"]), run["batch"]))


def test_bf16_round_trip_within_tolerance(run):
  model, _, _ = ic.load_inference_checkpoint(run["exports"]["bf16"]["directory"])
  assert model.decoder.blocks.mlp.up.kernel[...].dtype == jnp.bfloat16
  assert run["exports"]["bf16"]["param_bytes"] == 2 * run["exports"]["bf16"]["param_count"]
  reference = _logits(_model(run["cfg"], run["params"]), run["batch"])
  err = np.abs(_logits(model, run["batch"]) - reference).max() / np.abs(reference).max()
  print(f"bf16: max |logit error| / max |logit| = {err:.2e}")
  assert err < BF16_REL_TOL


def test_int8_round_trip_within_tolerance(run):
  info = run["exports"]["int8"]
  assert "decoder/blocks/mlp/down/kernel" in info["quantized_params"]
  assert "final_norm/scale" not in info["quantized_params"]
  assert info["param_bytes"] < 0.45 * run["exports"]["f32"]["param_bytes"]
  model, _, _ = ic.load_inference_checkpoint(info["directory"], mesh=mesh_of({"fsdp": 2, "tensor": 2}))
  assert model.decoder.blocks.mlp.up.kernel[...].dtype == jnp.float32
  reference = _logits(_model(run["cfg"], run["params"]), run["batch"])
  logits = _logits(model, run["batch"])
  err = np.abs(logits - reference).max()
  rel = err / np.abs(reference).max()
  ppl, ppl8 = _perplexity(reference, run["batch"]), _perplexity(logits, run["batch"])
  print(f"int8: max |logit error| {err:.2e} ({rel:.2e} of max |logit|), held-out perplexity "
        f"{ppl:.4f} -> {ppl8:.4f} ({100 * (ppl8 / ppl - 1):+.3f}%); parameter bytes "
        f"{info['param_bytes']} vs f32 {run['exports']['f32']['param_bytes']}")
  assert 0 < rel < INT8_REL_TOL
  assert abs(ppl8 / ppl - 1) < 0.01


def test_engine_generates_the_same_greedy_tokens(run):
  cfg = run["cfg"]
  loaded, _, _ = ic.load_inference_checkpoint(run["exports"]["f32"]["directory"])
  rng = np.random.default_rng(0)
  prompts = [np.concatenate([[BOS_ID], rng.integers(cfg.vocab.text_start, cfg.vocab.size, n)])
             for n in (3, 9)]

  def generate(model):
    engine = Engine(model, slots=2, max_length=32, steps_per_call=8)
    state = engine.init_decode_state()
    for slot, p in enumerate(prompts):
      state = engine.insert(engine.prefill(p, max_new_tokens=12), state, slot)
    state, out = engine.generate(state)
    return np.asarray(out.tokens_NB)

  np.testing.assert_array_equal(generate(loaded), generate(_model(cfg, run["params"])))


def test_not_an_inference_checkpoint_is_a_clear_error(run, tmp_path):
  with pytest.raises(ic.InferenceCheckpointError, match="training run.*slm-export"):
    ic.load_inference_checkpoint(run["workdir"])
  with pytest.raises(ic.InferenceCheckpointError, match="does not exist"):
    ic.load_inference_checkpoint(str(tmp_path / "nothing"))
  broken = tmp_path / "broken"
  shutil.copytree(run["exports"]["f32"]["directory"], broken)
  shutil.rmtree(broken / "params")
  with pytest.raises(ic.InferenceCheckpointError, match="incomplete"):
    ic.load_inference_checkpoint(str(broken))


def test_vocabulary_mismatch_is_a_clear_error(run, tmp_path):
  out = run["exports"]["f32"]["directory"]
  other = dataclasses.replace(run["cfg"].vocab, speech_tokenizer_name="kmeans-512@25Hz-other")
  with pytest.raises(VocabMismatchError, match="speech_tokenizer_name"):
    ic.load_inference_checkpoint(out, vocab=other)
  tampered = tmp_path / "tampered"
  shutil.copytree(out, tampered)
  other.save(str(tampered))        # a vocab_spec.json from another run dropped in
  with pytest.raises(VocabMismatchError, match="speech_tokenizer_name"):
    ic.load_inference_checkpoint(str(tampered))


def test_export_errors_and_atomic_replacement(run, monkeypatch):
  workdir, root = run["workdir"], run["root"]
  with pytest.raises(ic.ExportError, match="no checkpoint of step 7; its steps: \\[1\\]"):
    ic.export_inference_checkpoint(workdir, str(root / "x"), step=7)
  with pytest.raises(ic.ExportError, match="not an inference checkpoint"):
    ic.export_inference_checkpoint(workdir, workdir)          # never overwrites a run
  with pytest.raises(ic.ExportError, match="dtype"):
    ic.export_inference_checkpoint(workdir, str(root / "x"), dtype="float16")
  # a failing export leaves the earlier export in place and no partial directory behind
  out = str(root / "replaced")
  ic.export_inference_checkpoint(workdir, out, dtype="bfloat16")

  def fail(*_a, **_k):
    raise RuntimeError("disk full")
  monkeypatch.setattr(ic, "_copy_tokenizers", fail)
  with pytest.raises(RuntimeError, match="disk full"):
    ic.export_inference_checkpoint(workdir, out, dtype="float32")
  assert ic.read_info(out)["dtype"] == "bfloat16"
  monkeypatch.undo()
  ic.export_inference_checkpoint(workdir, out, dtype="float32")   # a complete one replaces it
  assert ic.read_info(out)["dtype"] == "float32"
  assert not [d for d in os.listdir(root) if ".partial-" in d or ".old-" in d]


def test_tokenizers_named_by_the_gin_config_are_copied(tmp_path):
  spm = tmp_path / "src" / "spm.model"
  kmeans = tmp_path / "src" / "kmeans512"
  kmeans.mkdir(parents=True)
  spm.write_bytes(b"spm")
  (kmeans / "speech_tokenizer.json").write_text(json.dumps({"kind": "kmeans"}))
  (kmeans / "centroids.npy").write_bytes(b"x")
  text = ("DIR = '%s'\n" % kmeans +
          f"demo_text_vocab.kind = 'sentencepiece'\ndemo_text_vocab.path = '{spm}'\n"
          "train/get_speech_tokenizer.path = %DIR\nget_speech_tokenizer.kind = 'kmeans'\n")
  dest = tmp_path / "out"
  dest.mkdir()
  rewritten, records = ic._copy_tokenizers(text, str(dest), {})  # pylint: disable=protected-access
  assert "demo_text_vocab.path = 'tokenizers/spm.model'" in rewritten
  assert "train/get_speech_tokenizer.path = 'tokenizers/kmeans512'" in rewritten
  assert {(r["role"], r["kind"], r["path"]) for r in records} == {
      ("text", "sentencepiece", "tokenizers/spm.model"), ("speech", "kmeans", "tokenizers/kmeans512")}
  assert (dest / "tokenizers" / "kmeans512" / "centroids.npy").exists()
  with pytest.raises(ic.ExportError, match="does not exist here; pass --text_tokenizer"):
    ic._copy_tokenizers("get_text_vocabulary.path = '/no/such.model'\n", str(dest), {})  # pylint: disable=protected-access


def test_int8_scales_are_per_output_channel_and_per_layer():
  assert quant.reduction_axes("kernel", ("layers", "embed", "heads", "head_dim")) == (1,)
  assert quant.reduction_axes("kernel", ("layers", "heads", "head_dim", "embed")) == (1, 2)
  assert quant.reduction_axes("kernel", ("layers", "mlp", "embed")) == (1,)
  assert quant.reduction_axes("table", ("vocab", "embed")) == (1,)
  assert quant.reduction_axes("kernel", ("embed", "vocab")) == (0,)
  assert quant.reduction_axes("scale", ("layers", "norm")) is None
  rng = np.random.default_rng(0)
  w = rng.standard_normal((3, 16, 4, 8)).astype(np.float32) * np.array([1, 10, 100])[:, None, None, None]
  entry = quant.quantize(w, (1,))
  assert entry["qvalue"].dtype == jnp.int8 and entry["scale"].shape == (3, 1, 4, 8)
  assert np.abs(np.asarray(entry["qvalue"])).max() == 127
  err = np.abs(np.asarray(quant.dequantize(entry, jnp.float32)) - w)
  assert (err <= np.asarray(entry["scale"]) / 2 + 1e-6).all()   # half a step of its own channel
  np.testing.assert_array_equal(quant.dequantize(quant.quantize(np.zeros((2, 3)), (0,)), jnp.float32), 0)
