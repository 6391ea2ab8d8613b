"""Each Zipper tower from its own checkpoint.

A tower is laid out like a shared-architecture model (`ZipperLM.text`, `ZipperLM.speech`), so:

* the text tower takes a Hugging Face Llama / Qwen2 checkpoint through the warm start
  (`WarmStart.hf_checkpoint`, train/warm_start.py imports it into the text tower);
* either tower takes an slm_jax inference checkpoint (`slm-export` of a shared-architecture run
  whose depth, widths and heads are the tower's): `WarmStart.speech_checkpoint` /
  `WarmStart.text_checkpoint`, restored as a parameter subtree by `restore_tower`.

Only the tower's own parameters are copied (a source's extra parameters, e.g. the speech channel
tables of a text tower's source, are ignored); the cross-attentions and input MLPs keep their init
(gate 0, identity input MLP), so the restored tower starts exactly as it was trained.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from slm_jax.errors import SlmError
from slm_jax.train.param_paths import param_path


class TowerInitError(SlmError, ValueError):
  """A tower checkpoint that does not fit the Zipper tower it should initialize."""


def copy_tower_params(model, tower: str, source) -> int:
  """Copies `source`'s parameters (a shared-architecture model) into `model.<tower>` in place.

  Every parameter of the tower must exist in `source` with the same shape; returns how many were
  copied. Raises TowerInitError naming what differs."""
  target = model.tower(tower)
  if source.cfg.vocab.size != model.cfg.vocab.size or source.cfg.vocab != model.cfg.vocab:
    raise TowerInitError(f"the {tower} tower's checkpoint has another vocabulary than the model "
                         f"(vocab sizes {source.cfg.vocab.size} vs {model.cfg.vocab.size}); "
                         "train it with the same UnifiedVocab")
  src = {param_path(p): x for p, x in
         jax.tree_util.tree_flatten_with_path(nnx.state(source, nnx.Param).to_pure_dict())[0]}
  state = nnx.state(target, nnx.Param)
  flat = jax.tree_util.tree_flatten_with_path(state.to_pure_dict())
  missing, wrong, values = [], [], []
  for path, x in flat[0]:
    name = param_path(path)
    if name not in src:
      missing.append(name)
    elif tuple(src[name].shape) != tuple(x.shape):
      wrong.append(f"{name} {tuple(src[name].shape)} != {tuple(x.shape)}")
    values.append(src.get(name, x))
  if missing or wrong:
    raise TowerInitError(
        f"the checkpoint does not fit the {tower} tower ({model.cfg.tower(tower).num_layers} "
        f"layers, width {model.cfg.tower(tower).embed_dim}): missing {missing[:4]}, shapes "
        f"{wrong[:4]}; set {tower}/TowerConfig to the checkpoint's model shape")
  values = [jnp.asarray(v, x.dtype) for v, (_, x) in zip(values, flat[0])]
  state.replace_by_pure_dict(jax.tree_util.tree_unflatten(flat[1], values))
  nnx.update(target, state)
  return len(values)


def restore_tower(model, tower: str, directory: str) -> int:
  """`model.<tower>` from the slm_jax inference checkpoint in `directory` (see the module doc)."""
  from slm_jax.export.inference_checkpoint import load_inference_checkpoint  # pylint: disable=import-outside-toplevel
  source, _, _ = load_inference_checkpoint(directory, vocab=model.cfg.vocab)
  if source.cfg.architecture != "shared":
    raise TowerInitError(f"{directory} holds a {source.cfg.architecture!r} model; a tower starts "
                         "from a shared-architecture one")
  return copy_tower_params(model, tower, source)
