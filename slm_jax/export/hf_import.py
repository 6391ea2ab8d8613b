"""Warm start: import a Llama / Qwen2 Hugging Face checkpoint into the text path of SpeechTextLM.

Reads `config.json` and safetensors (single file or sharded with `model.safetensors.index.json`)
with numpy only. The HF text vocabulary becomes the unified text range (HF row i -> unified id
`vocab.text_start + i`); every other row of the (padded) unified table — pad/eos/bos, reserved
specials, the speech range, padding rows — starts at the mean of the HF embedding rows plus
Gaussian noise of `new_row_noise` times the per-dimension standard deviation of those rows (for an
untied head, the same for its output columns). New tokens thus start as an "average" token: their
logits start near the mean logit instead of dominating or vanishing (Hewitt 2021, "Initializing new
word embeddings for pretrained language models"). If the HF config names bos/eos token ids, our
BOS/EOS rows copy those rows instead. Blocks, final norm and head are copied exactly; with
`text_tower_layers=n` the first n HF layers become the text tower and the rest the shared decoder.
Speech-only parameters (speech tower, extra channel embeddings and heads) keep their random init.
"""
from __future__ import annotations

import json
import logging
import os
from typing import Sequence

import gin
import jax.numpy as jnp
import numpy as np

from slm_jax.errors import SlmError
from slm_jax.export import hf_layout as hl
from slm_jax.export.safetensors_io import CheckpointNotFoundError, CheckpointReader
from slm_jax.models.build import build
from slm_jax.models.config import ModelConfig
from slm_jax.models.lm import SpeechTextLM
from slm_jax.unified_vocab import (BOS_ID, DEFAULT_NUM_RESERVED, DEFAULT_SPECIALS, EOS_ID,
                                   UnifiedVocab)

# ModelConfig fields that come from the checkpoint and may not be overridden.
FROM_CHECKPOINT = ("vocab", "num_layers", "embed_dim", "num_heads", "num_kv_heads", "head_dim",
                    "mlp_dim", "rope_theta", "norm_eps", "tie_embeddings", "qkv_bias")


class HFImportError(SlmError, ValueError):
  """The checkpoint cannot be imported; the message names the tensor or config field."""


def read_hf_config(path: str) -> dict:
  config_path = os.path.join(path, "config.json")
  if not os.path.exists(config_path):
    raise CheckpointNotFoundError(f"no config.json in {path}: pass a Hugging Face model directory")
  with open(config_path) as f:
    return json.load(f)


def _architecture(hf: dict) -> str:
  archs = hf.get("architectures") or []
  known = [a for a in archs if a in hl.ARCHITECTURES]
  if not known:
    raise HFImportError(f"unsupported architecture {archs or hf.get('model_type')!r}; slm_jax imports "
                        f"{sorted(hl.ARCHITECTURES)} checkpoints")
  return known[0]


def _rope_theta(hf: dict) -> float:
  """rope_theta from `rope_parameters` (transformers >= 5) or the older top-level fields."""
  params = hf.get("rope_parameters") or {}
  scaling = hf.get("rope_scaling") or {}
  rope_type = params.get("rope_type") or scaling.get("rope_type") or scaling.get("type") or "default"
  if rope_type != "default":
    raise HFImportError(f"rope scaling type {rope_type!r} is not implemented (only plain rotary "
                        "embeddings, rope_type 'default'); remove it from config.json only if the "
                        "checkpoint was trained without it")
  return float(params.get("rope_theta", hf.get("rope_theta", 10_000.0)))


def _check_supported(hf: dict, arch: str) -> None:
  problems = []
  if hf.get("hidden_act", "silu") != "silu":
    problems.append(f"hidden_act={hf['hidden_act']!r} (only 'silu', SwiGLU)")
  if hf.get("mlp_bias"):
    problems.append("mlp_bias=true (MLP biases)")
  if arch == "LlamaForCausalLM" and hf.get("attention_bias"):
    problems.append("attention_bias=true (biases on q/k/v and o)")
  if hf.get("use_sliding_window"):
    problems.append("use_sliding_window=true (sliding-window attention)")
  if problems:
    raise HFImportError(f"{arch} config.json uses features slm_jax does not implement: "
                        + "; ".join(problems))


def hf_config_to_model_config(hf: dict, vocab: UnifiedVocab, **overrides) -> ModelConfig:
  """ModelConfig of the checkpoint's text model; `vocab.text_size` must equal its vocab_size.

  `overrides` set the remaining ModelConfig fields (dtype, param_dtype, scan_layers, remat_policy,
  text/speech_tower_layers, ...); with `text_tower_layers=n` the decoder gets the other layers.
  """
  arch = _architecture(hf)
  _check_supported(hf, arch)
  clash = sorted(set(overrides) & set(FROM_CHECKPOINT))
  if clash:
    raise HFImportError(f"{clash} come from the checkpoint's config.json and cannot be overridden")
  if vocab.text_size != hf["vocab_size"]:
    raise HFImportError(f"vocab.text_size={vocab.text_size} but the checkpoint has vocab_size="
                        f"{hf['vocab_size']}; build the UnifiedVocab with text_size={hf['vocab_size']}")
  n_layers = int(hf["num_hidden_layers"])
  tower = int(overrides.get("text_tower_layers", 0))
  if not 0 <= tower <= n_layers:
    raise HFImportError(f"text_tower_layers={tower} must be within [0, {n_layers}] (HF layers)")
  heads = int(hf["num_attention_heads"])
  return ModelConfig(
      vocab=vocab, num_layers=n_layers - tower, embed_dim=int(hf["hidden_size"]), num_heads=heads,
      num_kv_heads=int(hf.get("num_key_value_heads") or heads),
      head_dim=int(hf.get("head_dim") or hf["hidden_size"] // heads),
      mlp_dim=int(hf["intermediate_size"]), rope_theta=_rope_theta(hf),
      norm_eps=float(hf.get("rms_norm_eps", 1e-6)),
      tie_embeddings=bool(hf.get("tie_word_embeddings", False)),
      qkv_bias=hl.ARCHITECTURES[arch], **overrides)


def check_model_config(cfg: ModelConfig, hf: dict, where: str = "the checkpoint") -> None:
  """Raises HFImportError naming every ModelConfig field that does not fit `hf` (config.json).

  The fields the checkpoint fixes are compared (layers, widths, heads, rotary base, norm epsilon,
  tying, q/k/v biases); `cfg.text_tower_layers` of the HF layers go to the text tower.
  """
  if cfg.vocab.text_size != hf.get("vocab_size"):
    raise HFImportError(f"UnifiedVocab.text_size is {cfg.vocab.text_size} but {where} has vocab_size="
                        f"{hf.get('vocab_size')}; set UnifiedVocab.text_size = {hf.get('vocab_size')}")
  expected = hf_config_to_model_config(hf, cfg.vocab, text_tower_layers=cfg.text_tower_layers)
  fields = [f for f in FROM_CHECKPOINT if f != "vocab" and getattr(cfg, f) != getattr(expected, f)]
  if fields:
    diffs = "; ".join(f"{f} is {getattr(cfg, f)!r}, needs {getattr(expected, f)!r}" for f in fields)
    fix = "\n  ".join(f"ModelConfig.{f} = {getattr(expected, f)!r}" for f in fields)
    raise HFImportError(
        f"the model config does not fit {where} (config.json): {diffs}.\nSet these bindings in "
        f"the model's gin file (or with --gin_param), or start from another checkpoint:\n  {fix}")


def _token_id(value) -> int | None:
  if isinstance(value, list):
    value = value[0] if value else None
  return int(value) if value is not None else None


def extend_rows(text_rows_VD: np.ndarray, cfg: ModelConfig, hf: dict, rng: np.random.Generator,
                noise: float) -> np.ndarray:
  """[V_text, D] HF rows -> [V_padded, D] unified rows (see the module docstring)."""
  vocab = cfg.vocab
  rows = np.asarray(text_rows_VD, np.float32)
  mean, std = rows.mean(0), rows.std(0)
  out = mean + noise * std * rng.standard_normal((cfg.padded_vocab_size, rows.shape[1]))
  out = out.astype(np.float32)
  out[vocab.text_start:vocab.text_start + vocab.text_size] = rows
  for ours, hf_key in ((BOS_ID, "bos_token_id"), (EOS_ID, "eos_token_id")):
    hf_id = _token_id(hf.get(hf_key))
    if hf_id is not None and 0 <= hf_id < vocab.text_size:
      out[ours] = rows[hf_id]
  return out


def _read(reader: CheckpointReader, name: str, expected: tuple[int, ...]) -> np.ndarray:
  if name not in reader:
    raise HFImportError(f"tensor {name!r} is missing from the checkpoint in {reader.directory}")
  found = reader.shape(name)
  if tuple(found) != tuple(expected):
    raise HFImportError(f"tensor {name!r}: expected shape {tuple(expected)} from config.json, "
                        f"found {tuple(found)} in the checkpoint")
  return np.asarray(reader.get(name), np.float32)


def _set(param, value: np.ndarray) -> None:
  old = param.get_value()
  if tuple(old.shape) != tuple(value.shape):
    raise HFImportError(f"internal: parameter shape {old.shape} != imported {value.shape}")
  param.set_value(jnp.asarray(value, old.dtype))


def import_weights(model: SpeechTextLM, reader: CheckpointReader, hf: dict, *, seed: int = 0,
                   new_row_noise: float = 0.1) -> None:
  """Copies every text-path tensor of `reader` into `model` (in place); checks names and shapes."""
  cfg = model.cfg
  vocab = cfg.vocab
  d = cfg.embed_dim
  rng = np.random.default_rng(seed)
  used = set()

  def read(name, expected):
    used.add(name)
    return _read(reader, name, expected)

  embed = read(hl.EMBED, (vocab.text_size, d))
  _set(model.towers.embed.table, extend_rows(embed, cfg, hf, rng, new_row_noise))
  if not cfg.tie_embeddings:
    head = read(hl.LM_HEAD, (vocab.text_size, d))
    _set(model.heads.kernel, extend_rows(head, cfg, hf, rng, new_row_noise).T)
  _set(model.final_norm.scale, read(hl.FINAL_NORM, (d,)))

  first = 0
  for blocks, n in hl.layer_stacks(model):
    for t in hl.layer_tensors(cfg.qkv_bias):
      param = hl.get_param(blocks, t.path)
      per_layer = tuple(param.get_value().shape[1:])
      stacked = [t.to_ours(read(hl.layer_name(first + i, t), hl.hf_shape(t, per_layer)), per_layer)
                 for i in range(n)]
      _set(param, np.stack(stacked))
    first += n

  unused = [n for n in reader.names() if n not in used and not n.endswith(hl.IGNORED_SUFFIXES)
            and not (cfg.tie_embeddings and n == hl.LM_HEAD)]
  if unused:
    raise HFImportError(f"the checkpoint has tensors this architecture does not use: {unused[:8]}"
                        f"{' ...' if len(unused) > 8 else ''}; its config.json does not describe it")


@gin.configurable
def load_hf_checkpoint(path: str, *, speech_codebook_sizes: Sequence[int] = (1024,),
                       specials: Sequence[str] = DEFAULT_SPECIALS,
                       num_reserved: int = DEFAULT_NUM_RESERVED, text_vocab_name: str = "",
                       speech_tokenizer_name: str = "", param_dtype: str = "float32", seed: int = 0,
                       new_row_noise: float = 0.1, **overrides) -> tuple[SpeechTextLM, ModelConfig]:
  """Builds a SpeechTextLM whose text path is the HF checkpoint at `path`.

  Args:
    path: directory with config.json and model.safetensors (or sharded + index).
    speech_codebook_sizes, specials, num_reserved, text_vocab_name, speech_tokenizer_name: the
      speech part of the UnifiedVocab (its text_size is the checkpoint's vocab_size).
    param_dtype: dtype of the imported parameters.
    seed: initializes speech-only parameters and the noise of new embedding rows.
    new_row_noise: noise scale of new rows, relative to the per-dimension std of the HF rows.
    **overrides: other ModelConfig fields (dtype, scan_layers, remat_policy, tower layers, ...).
  Returns:
    (model, cfg).
  """
  hf = read_hf_config(path)
  vocab = UnifiedVocab(text_size=int(hf["vocab_size"]), speech_codebook_sizes=tuple(speech_codebook_sizes),
                       specials=tuple(specials), num_reserved=num_reserved,
                       text_vocab_name=text_vocab_name, speech_tokenizer_name=speech_tokenizer_name)
  cfg = hf_config_to_model_config(hf, vocab, param_dtype=param_dtype, **overrides)
  model = build(cfg, seed=seed)
  import_weights(model, CheckpointReader(path), hf, seed=seed, new_row_noise=new_row_noise)
  logging.info("imported %s from %s (%d layers, text vocab %d)", _architecture(hf), path,
               int(hf["num_hidden_layers"]), vocab.text_size)
  return model, cfg
