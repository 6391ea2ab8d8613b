"""Export of the text path to a Hugging Face directory that transformers loads with equal logits."""
import os

import ml_dtypes
import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from slm_jax.unified_vocab import UnifiedVocab  # noqa: E402
from slm_jax.export.hf_export import export_hf_checkpoint  # noqa: E402
from slm_jax.export.hf_import import load_hf_checkpoint  # noqa: E402
from slm_jax.export.safetensors_io import SafetensorsFile, write_file  # noqa: E402
from slm_jax.models.build import build  # noqa: E402
from slm_jax.models.config import ModelConfig  # noqa: E402
from hf_testing import hf_logits, make_hf, our_text_logits  # noqa: E402


def _perturb(model, seed):
  """Random values everywhere (norm scales and biases too), so the test sees every tensor."""
  from flax import nnx  # pylint: disable=import-outside-toplevel
  import jax  # pylint: disable=import-outside-toplevel
  rng = np.random.default_rng(seed)
  state = nnx.state(model, nnx.Param)
  nnx.update(model, jax.tree.map(lambda x: x + 0.1 * rng.standard_normal(x.shape).astype(np.float32), state))


@pytest.mark.parametrize("qkv_bias,tie,tower", [(False, True, 0), (True, False, 1)])
def test_exported_model_matches_ours(tmp_path, qkv_bias, tie, tower):
  cfg = ModelConfig(vocab=UnifiedVocab(text_size=80, speech_codebook_sizes=(16, 4)), num_layers=2,
                    embed_dim=32, num_heads=4, num_kv_heads=2, head_dim=8, mlp_dim=48,
                    tie_embeddings=tie, qkv_bias=qkv_bias, text_tower_layers=tower, rope_theta=500.0)
  ours = build(cfg, seed=1)
  _perturb(ours, 2)
  path = export_hf_checkpoint(ours, str(tmp_path / "out"), bos_token_id=1, eos_token_id=2)
  hf = transformers.AutoModelForCausalLM.from_pretrained(path).eval()
  assert type(hf).__name__ == ("Qwen2ForCausalLM" if qkv_bias else "LlamaForCausalLM")
  assert hf.config.num_hidden_layers == 2 + tower
  ids = np.random.default_rng(0).integers(0, 80, (2, 11))
  np.testing.assert_allclose(hf_logits(hf, ids), our_text_logits(ours, cfg, ids), atol=1e-4, rtol=1e-4)


def test_import_export_round_trip_is_exact(tmp_path):
  _, path = make_hf(tmp_path, "src", arch="qwen2", tie=False)
  model, _ = load_hf_checkpoint(path, speech_codebook_sizes=(16,))
  out = export_hf_checkpoint(model, str(tmp_path / "back"))
  src, back = SafetensorsFile(os.path.join(path, "model.safetensors")), SafetensorsFile(
      os.path.join(out, "model.safetensors"))
  assert sorted(src.names()) == sorted(back.names())
  for name in src.names():
    np.testing.assert_array_equal(src.get(name), back.get(name), err_msg=name)


def test_bfloat16_export_and_writer_round_trip(tmp_path):
  tensors = {"a": np.arange(6, dtype=np.float32).reshape(2, 3).astype(ml_dtypes.bfloat16),
             "b": np.arange(5, dtype=np.int32)}
  write_file(str(tmp_path / "t.safetensors"), tensors)
  f = SafetensorsFile(str(tmp_path / "t.safetensors"))
  assert f.get("a").dtype == ml_dtypes.bfloat16 and f.shape("a") == (2, 3)
  np.testing.assert_array_equal(f.get("b"), tensors["b"])
  model = build(ModelConfig(num_layers=1), seed=0)
  out = export_hf_checkpoint(model, str(tmp_path / "bf16"), dtype="bfloat16")
  hf = transformers.AutoModelForCausalLM.from_pretrained(out)
  assert hf.model.embed_tokens.weight.dtype == torch.bfloat16
