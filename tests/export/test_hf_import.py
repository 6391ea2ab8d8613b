"""Warm start from Hugging Face Llama / Qwen2 checkpoints: logits parity, vocab extension, errors."""
import json
import os

import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from slm_jax.unified_vocab import BOS_ID, EOS_ID  # noqa: E402
from hf_testing import V_TEXT, hf_logits, make_hf, our_text_logits  # noqa: E402
from slm_jax.export import hf_import  # noqa: E402
from slm_jax.export.hf_import import HFImportError, load_hf_checkpoint  # noqa: E402
from slm_jax.errors import SlmError  # noqa: E402
from slm_jax.export.safetensors_io import (CheckpointReader, SafetensorsFile,  # noqa: E402
                                           SafetensorsReadError, write_file)

CASES = {
    "llama_gqa_untied": dict(arch="llama", kv_heads=2, tie=False),
    "llama_mha_tied": dict(arch="llama", kv_heads=4, tie=True),
    "llama_gqa_tied_sharded": dict(arch="llama", kv_heads=2, tie=True, shard=True),
    "qwen2_gqa_untied_sharded": dict(arch="qwen2", kv_heads=2, tie=False, shard=True),
    "qwen2_mha_tied": dict(arch="qwen2", kv_heads=4, tie=True),
}


@pytest.mark.parametrize("case", sorted(CASES))
@pytest.mark.parametrize("scan", [True, False])
def test_logits_match_hf(tmp_path, case, scan):
  hf, path = make_hf(tmp_path, case, **CASES[case])
  if CASES[case].get("shard"):
    assert os.path.exists(os.path.join(path, "model.safetensors.index.json"))
  model, cfg = load_hf_checkpoint(path, speech_codebook_sizes=(16,), scan_layers=scan)
  assert cfg.qkv_bias == (CASES[case]["arch"] == "qwen2")
  assert cfg.tie_embeddings == CASES[case]["tie"]
  ids = np.random.default_rng(1).integers(0, V_TEXT, (2, 13))
  np.testing.assert_allclose(our_text_logits(model, cfg, ids), hf_logits(hf, ids), atol=1e-4, rtol=1e-4)


def test_packed_rows_match_hf_per_document(tmp_path):
  hf, path = make_hf(tmp_path, "packed", arch="qwen2")
  model, cfg = load_hf_checkpoint(path, speech_codebook_sizes=(16,))
  rng = np.random.default_rng(2)
  doc_a, doc_b = rng.integers(0, V_TEXT, (1, 7)), rng.integers(0, V_TEXT, (1, 9))
  row = np.concatenate([doc_a, doc_b], 1)
  seg = np.array([[1] * 7 + [2] * 9], np.int32)
  pos = np.array([list(range(7)) + list(range(9))], np.int32)
  packed = our_text_logits(model, cfg, row, seg, pos)
  np.testing.assert_allclose(packed[:, :7], hf_logits(hf, doc_a), atol=1e-4, rtol=1e-4)
  np.testing.assert_allclose(packed[:, 7:], hf_logits(hf, doc_b), atol=1e-4, rtol=1e-4)


def test_text_tower_split_keeps_text_logits(tmp_path):
  hf, path = make_hf(tmp_path, "tower", layers=3)
  model, cfg = load_hf_checkpoint(path, speech_codebook_sizes=(16,), text_tower_layers=1,
                                  speech_tower_layers=1)
  assert (cfg.num_layers, cfg.text_tower_layers) == (2, 1)
  ids = np.random.default_rng(3).integers(0, V_TEXT, (2, 10))
  np.testing.assert_allclose(our_text_logits(model, cfg, ids), hf_logits(hf, ids), atol=1e-4, rtol=1e-4)


def test_bfloat16_checkpoint(tmp_path):
  hf, path = make_hf(tmp_path, "bf16", dtype=torch.bfloat16)
  assert SafetensorsFile(os.path.join(path, "model.safetensors")).dtype("model.norm.weight") == "BF16"
  model, cfg = load_hf_checkpoint(path, speech_codebook_sizes=(16,))
  ref = hf.float()  # the same bf16 weights, computed in float32
  ids = np.random.default_rng(4).integers(0, V_TEXT, (1, 8))
  np.testing.assert_allclose(our_text_logits(model, cfg, ids), hf_logits(ref, ids), atol=1e-4, rtol=1e-4)


def test_new_rows_start_near_the_mean_embedding(tmp_path):
  hf, path = make_hf(tmp_path, "rows", tie=False)
  model, cfg = load_hf_checkpoint(path, speech_codebook_sizes=(16, 4), new_row_noise=0.1)
  v = cfg.vocab
  hf_embed = hf.model.embed_tokens.weight.detach().numpy()
  table = np.asarray(model.towers.embed.table.get_value())
  np.testing.assert_array_equal(table[v.text_start:v.speech_start], hf_embed)
  np.testing.assert_array_equal(table[BOS_ID], hf_embed[5])   # config bos_token_id = 5
  np.testing.assert_array_equal(table[EOS_ID], hf_embed[7])   # config eos_token_id = 7
  new = np.concatenate([table[3:v.text_start], table[v.speech_start:]])
  mean, std = hf_embed.mean(0), hf_embed.std(0)
  # Mean plus 0.1 * std noise: every new row is close to the mean, and rows differ from each other.
  assert np.all(np.abs(new - mean) <= 0.6 * std + 1e-7)
  assert np.abs(new[0] - new[1]).max() > 0
  head = np.asarray(model.heads.kernel.get_value()).T
  np.testing.assert_array_equal(head[v.text_start:v.speech_start], hf.lm_head.weight.detach().numpy())
  assert cfg.padded_vocab_size == head.shape[0] and cfg.vocab.size < cfg.padded_vocab_size


def _rewrite_config(path, **changes):
  with open(os.path.join(path, "config.json")) as f:
    config = json.load(f)
  config.update(changes)
  with open(os.path.join(path, "config.json"), "w") as f:
    json.dump(config, f)


def test_unknown_architecture_is_refused(tmp_path):
  _, path = make_hf(tmp_path, "gpt2")
  _rewrite_config(path, architectures=["GPT2LMHeadModel"])
  with pytest.raises(HFImportError, match="GPT2LMHeadModel"):
    load_hf_checkpoint(path, speech_codebook_sizes=(16,))


def test_unimplemented_rope_scaling_is_refused(tmp_path):
  _, path = make_hf(tmp_path, "rope")
  _rewrite_config(path, rope_parameters={"rope_type": "llama3", "rope_theta": 1000.0, "factor": 8.0})
  with pytest.raises(HFImportError, match="llama3"):
    load_hf_checkpoint(path, speech_codebook_sizes=(16,))


def test_wrong_tensor_shape_names_the_tensor(tmp_path):
  _, path = make_hf(tmp_path, "shape")
  file = os.path.join(path, "model.safetensors")
  reader = SafetensorsFile(file)
  tensors = {n: np.array(reader.get(n)) for n in reader.names()}
  name = "model.layers.1.mlp.up_proj.weight"
  tensors[name] = tensors[name][:40]
  del reader
  write_file(file, tensors)
  with pytest.raises(HFImportError, match=r"model\.layers\.1\.mlp\.up_proj\.weight.*\(48, 32\).*\(40, 32\)"):
    load_hf_checkpoint(path, speech_codebook_sizes=(16,))


def test_missing_and_unexpected_tensors(tmp_path):
  _, path = make_hf(tmp_path, "missing", tie=False)
  file = os.path.join(path, "model.safetensors")
  reader = SafetensorsFile(file)
  tensors = {n: np.array(reader.get(n)) for n in reader.names()}
  del reader
  write_file(file, {k: v for k, v in tensors.items() if k != "lm_head.weight"})
  with pytest.raises(HFImportError, match="lm_head.weight.*missing"):
    load_hf_checkpoint(path, speech_codebook_sizes=(16,))
  write_file(file, {**tensors, "model.layers.0.self_attn.o_proj.bias": np.zeros(32, np.float32)})
  with pytest.raises(HFImportError, match="o_proj.bias"):
    load_hf_checkpoint(path, speech_codebook_sizes=(16,))


def test_config_conversion_rules():
  from slm_jax.unified_vocab import UnifiedVocab
  hf = {"architectures": ["LlamaForCausalLM"], "vocab_size": 100, "hidden_size": 64,
        "num_hidden_layers": 3, "num_attention_heads": 8, "intermediate_size": 96,
        "rope_theta": 500000.0, "rms_norm_eps": 1e-5}
  cfg = hf_import.hf_config_to_model_config(hf, UnifiedVocab(text_size=100), dtype="bfloat16")
  assert (cfg.num_kv_heads, cfg.head_dim, cfg.rope_theta, cfg.dtype) == (8, 8, 500000.0, "bfloat16")
  with pytest.raises(HFImportError, match="text_size=100"):
    hf_import.hf_config_to_model_config(hf, UnifiedVocab(text_size=99))
  with pytest.raises(HFImportError, match="embed_dim"):
    hf_import.hf_config_to_model_config(hf, UnifiedVocab(text_size=100), embed_dim=32)
  with pytest.raises(HFImportError, match="mlp_bias"):
    hf_import.hf_config_to_model_config({**hf, "mlp_bias": True}, UnifiedVocab(text_size=100))
  assert issubclass(HFImportError, SlmError) and issubclass(HFImportError, ValueError)


def test_model_config_check_names_every_mismatch_and_the_fix():
  from slm_jax.models.config import ModelConfig
  from slm_jax.unified_vocab import UnifiedVocab
  hf = {"architectures": ["Qwen2ForCausalLM"], "vocab_size": 100, "hidden_size": 64,
        "num_hidden_layers": 3, "num_attention_heads": 8, "num_key_value_heads": 2,
        "intermediate_size": 96, "rope_theta": 500000.0, "rms_norm_eps": 1e-5,
        "tie_word_embeddings": False}
  fits = ModelConfig(vocab=UnifiedVocab(text_size=100), num_layers=2, text_tower_layers=1,
                     embed_dim=64, num_heads=8, num_kv_heads=2, head_dim=8, mlp_dim=96,
                     rope_theta=500000.0, norm_eps=1e-5, tie_embeddings=False, qkv_bias=True)
  hf_import.check_model_config(fits, hf)
  wrong = fits.replace(embed_dim=32, num_layers=3, qkv_bias=False)
  with pytest.raises(HFImportError) as e:
    hf_import.check_model_config(wrong, hf)
  msg = str(e.value)
  for line in ("ModelConfig.num_layers = 2", "ModelConfig.embed_dim = 64", "ModelConfig.qkv_bias = True"):
    assert line in msg
  assert "mlp_dim" not in msg
  with pytest.raises(HFImportError, match="UnifiedVocab.text_size = 100"):
    hf_import.check_model_config(fits.replace(vocab=UnifiedVocab(text_size=99)), hf)


def test_reader_reads_sharded_index(tmp_path):
  _, path = make_hf(tmp_path, "index", shard=True)
  reader = CheckpointReader(path)
  assert "model.layers.1.mlp.down_proj.weight" in reader.names()
  assert reader.shape("model.layers.1.mlp.down_proj.weight") == (32, 48)
  with pytest.raises(FileNotFoundError, match="model.safetensors") as e:
    CheckpointReader(str(tmp_path))
  assert isinstance(e.value, SlmError)
  with pytest.raises(FileNotFoundError, match="config.json") as e:
    load_hf_checkpoint(str(tmp_path))
  assert isinstance(e.value, SlmError)


def test_corrupt_file_is_a_clear_error(tmp_path):
  _, path = make_hf(tmp_path, "corrupt")
  with open(os.path.join(path, "model.safetensors"), "wb") as f:
    f.write(b"not a safetensors file at all")
  with pytest.raises(SafetensorsReadError, match="model.safetensors.*not a readable safetensors"):
    load_hf_checkpoint(path, speech_codebook_sizes=(16,))


def test_write_is_atomic(tmp_path):
  path = str(tmp_path / "t.safetensors")
  write_file(path, {"a": np.ones(3, np.float32)})
  with pytest.raises(Exception):   # an object array cannot be written: the old file stays whole
    write_file(path, {"a": np.zeros(3, np.float32), "b": np.array([object()])})
  assert sorted(os.listdir(tmp_path)) == ["t.safetensors"]
  np.testing.assert_array_equal(SafetensorsFile(path).get("a"), np.ones(3, np.float32))
