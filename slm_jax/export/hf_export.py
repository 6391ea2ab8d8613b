"""Export the text path of SpeechTextLM as a Hugging Face Llama (or Qwen2, with q/k/v biases) model.

Writes `config.json` and `model.safetensors` that transformers' `AutoModelForCausalLM` loads. Only
the text range of the unified vocabulary is kept (unified id `vocab.text_start + i` -> HF row i);
text-tower layers come first, then the shared decoder. Speech-only parameters (speech tower,
extra channel embeddings and heads) are not part of a text LM and are dropped: on text-only inputs
the exported model gives the same logits as SpeechTextLM on the text columns.
"""
from __future__ import annotations

import json
import logging
import os

import ml_dtypes
import numpy as np

from slm_jax.atomic_write import atomic_write
from slm_jax.errors import SlmError
from slm_jax.export import hf_layout as hl
from slm_jax.export.safetensors_io import SINGLE_FILE, write_file
from slm_jax.models.lm import SpeechTextLM


class HFExportError(SlmError, ValueError):
  """The model cannot be exported as asked."""


_SAVE_DTYPES = {"float32": np.float32, "bfloat16": ml_dtypes.bfloat16, "float16": np.float16}


def model_to_hf_config(model: SpeechTextLM, *, dtype: str = "float32", bos_token_id=None,
                       eos_token_id=None) -> dict:
  cfg = model.cfg
  arch = "Qwen2ForCausalLM" if cfg.qkv_bias else "LlamaForCausalLM"
  out = {
      "architectures": [arch], "model_type": "qwen2" if cfg.qkv_bias else "llama",
      "vocab_size": cfg.vocab.text_size, "hidden_size": cfg.embed_dim,
      "intermediate_size": cfg.mlp_dim,
      "num_hidden_layers": cfg.num_layers + cfg.text_tower_layers,
      "num_attention_heads": cfg.num_heads, "num_key_value_heads": cfg.num_kv_heads,
      "head_dim": cfg.head_dim, "hidden_act": "silu", "rms_norm_eps": cfg.norm_eps,
      "rope_theta": cfg.rope_theta,
      "rope_parameters": {"rope_type": "default", "rope_theta": cfg.rope_theta},
      "tie_word_embeddings": cfg.tie_embeddings, "bos_token_id": bos_token_id,
      "eos_token_id": eos_token_id, "dtype": dtype, "max_position_embeddings": 4096,
  }
  if not cfg.qkv_bias:
    out.update(attention_bias=False, mlp_bias=False)
  return out


def model_to_hf_tensors(model: SpeechTextLM) -> dict[str, np.ndarray]:
  """HF tensor name -> float32 array for the text path of `model`."""
  cfg = model.cfg
  vocab = cfg.vocab
  text = slice(vocab.text_start, vocab.text_start + vocab.text_size)
  table = np.asarray(model.towers.embed.table.get_value(), np.float32)
  tensors = {hl.EMBED: table[text], hl.FINAL_NORM: np.asarray(model.final_norm.scale.get_value(), np.float32)}
  if not cfg.tie_embeddings:
    tensors[hl.LM_HEAD] = np.asarray(model.heads.kernel.get_value(), np.float32)[:, text].T
  first = 0
  for blocks, n in hl.layer_stacks(model):
    for t in hl.layer_tensors(cfg.qkv_bias):
      stacked = np.asarray(hl.get_param(blocks, t.path).get_value(), np.float32)
      for i in range(n):
        tensors[hl.layer_name(first + i, t)] = t.to_hf(stacked[i])
    first += n
  return tensors


def export_hf_checkpoint(model: SpeechTextLM, directory: str, *, dtype: str = "float32",
                         bos_token_id: int | None = None, eos_token_id: int | None = None) -> str:
  """Writes config.json + model.safetensors for the text path of `model` into `directory`.

  bos_token_id / eos_token_id: the text tokenizer's ids, recorded in config.json (our own
  BOS/EOS rows are specials, outside the text range, and are not exported).
  """
  if dtype not in _SAVE_DTYPES:
    raise HFExportError(f"dtype={dtype!r}; use one of {sorted(_SAVE_DTYPES)}")
  if model.cfg.speech_tower_layers:
    logging.warning("speech tower layers are not part of the exported text model and are dropped")
  os.makedirs(directory, exist_ok=True)
  tensors = {k: np.ascontiguousarray(v.astype(_SAVE_DTYPES[dtype]))
             for k, v in model_to_hf_tensors(model).items()}
  write_file(os.path.join(directory, SINGLE_FILE), tensors)
  config = model_to_hf_config(model, dtype=dtype, bos_token_id=bos_token_id, eos_token_id=eos_token_id)
  atomic_write(os.path.join(directory, "config.json"), json.dumps(config, indent=2, sort_keys=True))
  return directory
