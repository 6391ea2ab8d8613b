"""How Hugging Face Llama / Qwen2 tensors map onto SpeechTextLM parameters (both directions).

Hugging Face `nn.Linear` stores W[out, in]; our `DenseGeneral` kernels are W[*in, *out] with head
dimensions split out (q: [D, H, hd], o: [H, hd, D]). Both use the half-split rotary layout
(rotate_half), so no permutation of q/k rows is needed: a kernel is `W_hf.T.reshape(ours)`.
"""
from __future__ import annotations

import dataclasses
import functools
import math

import numpy as np

# Architectures we know how to map, and whether they carry q/k/v biases.
ARCHITECTURES = {"LlamaForCausalLM": False, "Qwen2ForCausalLM": True}


@dataclasses.dataclass(frozen=True)
class TensorMap:
  """One tensor inside a decoder layer: HF name suffix, our attribute path, layout kind."""
  hf_name: str
  path: tuple[str, ...]    # attributes from a DecoderBlock to the nnx.Param
  kind: str                # "linear" (W[out, in] <-> kernel[*in, *out]) or "vector"
  n_in: int = 1            # how many leading dims of our kernel are input dims

  def to_ours(self, hf: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    return hf.T.reshape(shape) if self.kind == "linear" else hf.reshape(shape)

  def to_hf(self, ours: np.ndarray) -> np.ndarray:
    if self.kind == "linear":
      return ours.reshape(math.prod(ours.shape[:self.n_in]), -1).T
    return ours.reshape(-1)


LAYER_TENSORS = (
    TensorMap("self_attn.q_proj.weight", ("attn", "query", "kernel"), "linear"),
    TensorMap("self_attn.k_proj.weight", ("attn", "key", "kernel"), "linear"),
    TensorMap("self_attn.v_proj.weight", ("attn", "value", "kernel"), "linear"),
    TensorMap("self_attn.o_proj.weight", ("attn", "out", "kernel"), "linear", n_in=2),
    TensorMap("mlp.gate_proj.weight", ("mlp", "gate", "kernel"), "linear"),
    TensorMap("mlp.up_proj.weight", ("mlp", "up", "kernel"), "linear"),
    TensorMap("mlp.down_proj.weight", ("mlp", "down", "kernel"), "linear"),
    TensorMap("input_layernorm.weight", ("attn_norm", "scale"), "vector"),
    TensorMap("post_attention_layernorm.weight", ("mlp_norm", "scale"), "vector"),
)
QKV_BIAS_TENSORS = (
    TensorMap("self_attn.q_proj.bias", ("attn", "query", "bias"), "vector"),
    TensorMap("self_attn.k_proj.bias", ("attn", "key", "bias"), "vector"),
    TensorMap("self_attn.v_proj.bias", ("attn", "value", "bias"), "vector"),
)

EMBED = "model.embed_tokens.weight"
FINAL_NORM = "model.norm.weight"
LM_HEAD = "lm_head.weight"
# Buffers some older checkpoints carry; they hold no learned state.
IGNORED_SUFFIXES = ("rotary_emb.inv_freq",)


def layer_name(i: int, t: TensorMap) -> str:
  return f"model.layers.{i}.{t.hf_name}"


def layer_tensors(qkv_bias: bool) -> tuple[TensorMap, ...]:
  return LAYER_TENSORS + (QKV_BIAS_TENSORS if qkv_bias else ())


def hf_shape(t: TensorMap, ours_per_layer: tuple[int, ...]) -> tuple[int, ...]:
  """The HF shape of a tensor whose per-layer shape in our model is `ours_per_layer`."""
  if t.kind == "linear":
    return (math.prod(ours_per_layer[t.n_in:]), math.prod(ours_per_layer[:t.n_in]))
  return (math.prod(ours_per_layer),)


def get_param(module, path: tuple[str, ...]):
  """The nnx.Param at attribute `path` below `module`."""
  return functools.reduce(getattr, path, module)


def layer_stacks(model) -> list[tuple[object, int]]:
  """The text path's stacked blocks in HF layer order: [(blocks, num_layers), ...].

  Text-tower layers (if any) come first, then the shared decoder; the speech tower is not part
  of a text LM.
  """
  stacks = []
  for stack in (model.towers.text_layers, model.decoder):
    if stack.num_layers:
      stacks.append((stack.blocks, stack.num_layers))
  return stacks
