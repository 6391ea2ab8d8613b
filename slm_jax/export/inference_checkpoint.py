"""Inference checkpoints: a training run's parameters, config, vocabulary and tokenizers, alone.

    export_inference_checkpoint(workdir, out, step=None, dtype="bfloat16", quantize="int8")
    model, vocab, info = load_inference_checkpoint(out, mesh=None)

An inference checkpoint is a directory (docs/inference.md):

    params/               Orbax PyTree {"params": ...}: parameters only (no optimizer state,
                          step counters or data-iterator state), each in `dtype`; with int8
                          quantization the matmul weights are {"qvalue": int8, "scale": float32}
                          (export/quantize.py) and are dequantized into `dtype` at load
    model_config.json     the ModelConfig fields except the vocabulary (what loading builds)
    vocab_spec.json       the UnifiedVocab spec
    operative_config.gin  the run's operative gin config, tokenizer paths rewritten to the copies
    tokenizers/           the tokenizer files the gin config names (sentencepiece model, k-means
                          dir, tokenizer.json), or the ones passed to the export
    export_info.json      format, source checkpoint and step, dtype, quantization, parameter
                          count, bytes, tokenizers

The export is written into a temporary directory beside `out` and renamed into place only when
complete: a failed export never replaces a good one. Parameters are stored without shardings of
their own; `load_inference_checkpoint` restores them onto any mesh with the model's logical-axis
shardings.
"""
from __future__ import annotations

import ast
import dataclasses
import json
import os
import re
import shutil
import tempfile
from typing import Optional, Sequence

import gin
import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
from flax import nnx
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P, SingleDeviceSharding

from slm_jax import sharding
from slm_jax.atomic_write import atomic_write
from slm_jax.configuration import OPERATIVE_CONFIG_FILENAME
from slm_jax.errors import SlmError
from slm_jax.export import quantize as quant
from slm_jax.models import build
from slm_jax.models.config import ModelConfig, as_dtype
from slm_jax.unified_vocab import SPEC_FILENAME, UnifiedVocab, VocabMismatchError

FORMAT = "slm_jax.inference_checkpoint"
VERSION = 1
INFO_FILENAME = "export_info.json"
MODEL_CONFIG_FILENAME = "model_config.json"
PARAMS_DIRNAME = "params"
TOKENIZERS_DIRNAME = "tokenizers"
DTYPES = ("float32", "bfloat16")

# gin parameters that hold tokenizer files, by role (a scope prefix "name/" may precede them).
TOKENIZER_BINDINGS = {
    "text": ("get_text_vocabulary.path", "demo_text_vocab.path", "SentencePieceVocab.model_file",
             "HFTokenizerVocab.path", "WarmStart.tokenizer"),
    "speech": ("get_speech_tokenizer.path", "demo_speech_tokenizer.path"),
}
# The binding added to the copied gin config for a tokenizer passed to the export explicitly.
DEFAULT_BINDING = {"text": "get_text_vocabulary", "speech": "get_speech_tokenizer"}


class ExportError(SlmError, ValueError):
  """The training run cannot be exported as asked (no workdir, no checkpoint, bad option)."""


class InferenceCheckpointError(SlmError, ValueError):
  """A directory is not a (complete, compatible) inference checkpoint."""


# -- nested dicts ---------------------------------------------------------------------------------
def _flatten(tree: dict, prefix: tuple = ()) -> dict:
  out = {}
  for k, v in tree.items():
    if isinstance(v, dict):
      out.update(_flatten(v, prefix + (k,)))
    else:
      out[prefix + (k,)] = v
  return out


def _unflatten(flat: dict) -> dict:
  out: dict = {}
  for keys, v in flat.items():
    node = out
    for k in keys[:-1]:
      node = node.setdefault(k, {})
    node[keys[-1]] = v
  return out


def _name(keys) -> str:
  return "/".join(map(str, keys))


# -- the model's parameters: shapes and logical axes ----------------------------------------------
def _abstract_params(cfg: ModelConfig):
  """(graphdef, abstract nnx.State of the parameters, {path: ShapeDtypeStruct}, {path: axes})."""
  graphdef, state = nnx.split(build.build_abstract(cfg), nnx.Param)
  shapes = _flatten(state.to_pure_dict())
  specs = _flatten(nnx.get_partition_spec(state).to_pure_dict())
  axes = {k: (tuple(s) if isinstance(s, P) else None) for k, s in specs.items()}
  return graphdef, state, shapes, axes


def _shardings(state, mesh: Optional[Mesh], rules) -> dict:
  """{path: Sharding}: logical-axis shardings on `mesh`, or the default device without one."""
  if mesh is None:
    device = SingleDeviceSharding(jax.devices()[0])
    return {k: device for k in _flatten(state.to_pure_dict())}
  return _flatten(sharding.state_shardings(state, mesh, rules).to_pure_dict())


def _scale_sharding(param_sharding, shape):
  """A scale's sharding: its parameter's, with the size-1 (reduced) axes replicated."""
  if not isinstance(param_sharding, NamedSharding):
    return param_sharding
  spec = tuple(param_sharding.spec) + (None,) * (len(shape) - len(param_sharding.spec))
  return NamedSharding(param_sharding.mesh, P(*[None if d == 1 else s for d, s in zip(shape, spec)]))


# -- gin text: bindings, model config, tokenizer paths --------------------------------------------
_BINDING = re.compile(r"^(?P<key>(?:[\w.]+/)*[\w.]+\.\w+)\s*=\s*(?P<value>.*?)\s*$")
_MACRO = re.compile(r"^(?P<key>\w+)\s*=\s*(?P<value>.*?)\s*$")


def _literal(text: str, macros: dict):
  if text.startswith("%") and text[1:] in macros:
    return _literal(macros[text[1:]], macros)
  try:
    return ast.literal_eval(text)
  except (ValueError, SyntaxError):
    return None


def gin_bindings(text: str) -> dict:
  """{"[scope/]configurable.param": value} of the one-line bindings whose value is a literal
  (macros resolved); values gin writes over several lines are left out."""
  lines = text.splitlines()
  macros = {m["key"]: m["value"] for m in map(_MACRO.match, lines) if m}
  out = {}
  for m in map(_BINDING.match, lines):
    if m and not m["value"].endswith("\\"):
      out[m["key"]] = _literal(m["value"], macros)
  return out


def _set_binding(text: str, key: str, value) -> str:
  """`text` with `key = value` (replacing the binding's line, or appended)."""
  line = f"{key} = {value!r}"
  pattern = re.compile(rf"^{re.escape(key)}\s*=.*$", re.M)
  if pattern.search(text):
    return pattern.sub(lambda _: line, text)
  return text.rstrip("\n") + f"\n\n# Added by slm-export:\n{line}\n"


def model_config_from_gin(text: str, vocab: UnifiedVocab) -> ModelConfig:
  """The ModelConfig an operative gin config binds, with `vocab` (the checkpoint's).

  Parses the text in a clean global gin config (cleared again afterwards); modules the text
  imports are not imported and bindings of unknown configurables are skipped.
  """
  import slm_jax.registry  # noqa: F401  pylint: disable=import-outside-toplevel,unused-import
  body = "\n".join(l for l in text.splitlines() if not l.startswith(("import ", "from ")))
  gin.clear_config()
  try:
    gin.parse_config(body, skip_unknown=True)
    cfg = build.config_from_gin()
  except (ValueError, KeyError, TypeError, SyntaxError) as e:
    raise ExportError(f"the run's operative gin config does not give a model config: {e}") from e
  finally:
    gin.clear_config()
  return dataclasses.replace(cfg, vocab=vocab)


def _tokenizer_kind(role: str, path: str, key: str, bindings: dict) -> str:
  configurable = key.rsplit(".", 1)[0]
  kind = bindings.get(f"{configurable}.kind")
  if isinstance(kind, str):
    return kind
  if role == "speech":
    spec = os.path.join(path, "speech_tokenizer.json")
    if os.path.exists(spec):
      with open(spec) as f:
        return json.load(f).get("kind", "")
    return ""
  return "sentencepiece" if path.endswith(".model") else "hf_tokenizers"


def _copy_tokenizers(gin_text: str, tmp: str, explicit: dict) -> tuple[str, list]:
  """Copies the tokenizer files into tmp/tokenizers; returns (rewritten gin text, their records).

  `explicit` ({"text": path, "speech": path}, values may be None) overrides and completes what the
  gin config names."""
  bindings = gin_bindings(gin_text)
  found: dict = {}   # (role, abs source) -> [binding keys]
  for role, params in TOKENIZER_BINDINGS.items():
    for key, value in bindings.items():
      if key.split("/")[-1] in params and isinstance(value, str) and value:
        if explicit.get(role):
          continue
        if not os.path.exists(value):
          raise ExportError(f"the run's gin config names the {role} tokenizer {value!r} ({key}) but "
                            f"it does not exist here; pass --{role}_tokenizer PATH")
        found.setdefault((role, os.path.abspath(value)), []).append(key)
  for role, path in explicit.items():
    if path:
      if not os.path.exists(path):
        raise ExportError(f"--{role}_tokenizer {path!r} does not exist")
      keys = [k for k in bindings if k.split("/")[-1] in TOKENIZER_BINDINGS[role]]
      found[(role, os.path.abspath(path))] = keys or [f"{DEFAULT_BINDING[role]}.path"]
  records, used = [], set()
  for (role, source), keys in sorted(found.items()):
    base = os.path.basename(source.rstrip("/"))
    rel, n = os.path.join(TOKENIZERS_DIRNAME, base), 1
    while rel in used:
      n += 1
      rel = os.path.join(TOKENIZERS_DIRNAME, f"{n}_{base}")
    used.add(rel)
    dest = os.path.join(tmp, rel)
    os.makedirs(os.path.dirname(dest), exist_ok=True)
    (shutil.copytree if os.path.isdir(source) else shutil.copy2)(source, dest)
    kind = _tokenizer_kind(role, source, keys[0], bindings)
    for key in keys:
      gin_text = _set_binding(gin_text, key, rel)
      configurable = key.rsplit(".", 1)[0]
      if kind and f"{configurable}.kind" not in bindings and key.endswith(".path") and \
          configurable.split("/")[-1] == DEFAULT_BINDING[role]:
        gin_text = _set_binding(gin_text, f"{configurable}.kind", kind)
    records.append({"role": role, "kind": kind, "path": rel, "source": source, "bindings": keys})
  return gin_text, records


def resolved_gin(directory: str) -> str:
  """The export's operative gin config with its tokenizer paths made absolute (parse this one)."""
  info = read_info(directory)
  with open(os.path.join(directory, OPERATIVE_CONFIG_FILENAME)) as f:
    text = f.read()
  for tok in info.get("tokenizers", []):
    for key in tok["bindings"]:
      text = _set_binding(text, key, os.path.join(os.path.abspath(directory), tok["path"]))
  return text


# -- the training checkpoint ----------------------------------------------------------------------
def _checkpoint_step(workdir: str, step: Optional[int]) -> tuple[str, int]:
  """(checkpoint directory of `step`, step); the latest complete one when `step` is None."""
  if not os.path.isdir(workdir):
    raise ExportError(f"no training run at {workdir}: pass the --workdir that slm-train wrote")
  root = os.path.join(workdir, "checkpoints")
  # Orbax renames a checkpoint to its bare step number only once complete.
  steps = sorted(int(d) for d in os.listdir(root) if d.isdigit()) if os.path.isdir(root) else []
  if not steps:
    raise ExportError(f"{workdir} has no complete checkpoint (no {root}/<step>): train it first, "
                      "or pass the run's --workdir")
  if step is None:
    step = steps[-1]
  if step not in steps:
    raise ExportError(f"{root} has no checkpoint of step {step}; its steps: {steps}")
  return os.path.join(root, str(step)), step


def _read_json_item(path: str):
  if not os.path.isdir(path):
    return None
  return ocp.Checkpointer(ocp.JsonCheckpointHandler()).restore(path, args=ocp.args.JsonRestore())


def _check_shapes(saved: dict, want: dict, where: str, error) -> None:
  for key, sds in want.items():
    if key not in saved:
      raise error(f"{where} has no parameter {_name(key)!r}: it was written for another model "
                  "config (layers, towers, tied embeddings)")
    shape = tuple(getattr(saved[key], "shape", ()) or ())
    if shape != tuple(sds.shape):
      raise error(f"{where}: parameter {_name(key)!r} has shape {shape} there but {tuple(sds.shape)} "
                  "in the model its config describes")


def _restore_tree(path: str, target: dict) -> dict:
  """Restores exactly the `target` entries (others, e.g. optimizer state, are not read)."""
  return ocp.PyTreeCheckpointer().restore(path, args=ocp.args.PyTreeRestore(
      item=target, restore_args=ocp.checkpoint_utils.construct_restore_args(target),
      partial_restore=True))


def _saved_metadata(path: str) -> dict:
  meta = ocp.PyTreeCheckpointer().metadata(os.path.abspath(path))  # a relative path reads None
  tree = getattr(meta, "item_metadata", meta)
  if tree is None:
    raise InferenceCheckpointError(f"{path} has no readable parameter metadata: the export is "
                                   "incomplete or damaged; export it again with slm-export")
  return _int_keys(getattr(tree, "tree", tree))


def _int_keys(tree):
  """Orbax stores list indices (nnx.List, e.g. a Zipper's cross-attentions) as "0", "1", ...; the
  model's state names them 0, 1, ..."""
  if not isinstance(tree, dict) and not hasattr(tree, "items"):
    return tree
  return {(int(k) if isinstance(k, str) and k.isdigit() else k): _int_keys(v) for k, v in tree.items()}


# -- export ---------------------------------------------------------------------------------------
def export_inference_checkpoint(workdir: str, out: str, *, step: Optional[int] = None,
                                dtype: str = "float32", quantize: Optional[str] = None,
                                text_tokenizer: Optional[str] = None,
                                speech_tokenizer: Optional[str] = None,
                                mesh: Optional[Mesh] = None) -> dict:
  """Writes the inference checkpoint of `workdir`'s checkpoint `step` (latest) to `out`.

  Args:
    dtype: the parameters' dtype ("float32" | "bfloat16"); the model is built with it at load.
    quantize: None, or "int8": weight-only int8 with per-output-channel scales for the matmul
      weights and embedding tables (export/quantize.py), dequantized into `dtype` at load.
    text_tokenizer, speech_tokenizer: tokenizer files to ship (override what the gin names).
    mesh: where the parameters are restored while exporting (default: every device, fsdp).
  Returns the export_info dict. The global gin config is cleared (the run's config is parsed).
  """
  if dtype not in DTYPES:
    raise ExportError(f"dtype {dtype!r}: use one of {DTYPES}")
  if quantize not in (None,) + quant.METHODS:
    raise ExportError(f"quantize {quantize!r}: use one of {quant.METHODS} (or none)")
  out = os.path.abspath(out)
  if os.path.exists(out) and not is_inference_checkpoint(out) and os.listdir(out):
    raise ExportError(f"{out} exists and is not an inference checkpoint; choose a new --out (an "
                      "earlier export there would be replaced, anything else never is)")
  ckpt, step = _checkpoint_step(workdir, step)
  vocab_dict = _read_json_item(os.path.join(ckpt, "vocab"))
  if not vocab_dict:
    vocab_dict = UnifiedVocab.load(workdir).to_dict()
  vocab = UnifiedVocab.from_dict(vocab_dict)
  gin_text = (_read_json_item(os.path.join(ckpt, "config")) or {}).get("operative_gin", "")
  if not gin_text:
    with open(os.path.join(workdir, OPERATIVE_CONFIG_FILENAME)) as f:
      gin_text = f.read()
  trained = model_config_from_gin(gin_text, vocab)
  cfg = dataclasses.replace(trained, param_dtype=dtype)

  mesh = mesh if mesh is not None else sharding.make_mesh({"fsdp": -1})
  _, state, shapes, axes = _abstract_params(trained)
  shardings = _shardings(state, mesh, None)
  state_path = os.path.join(ckpt, "state")
  _check_shapes(_flatten(_saved_metadata(state_path)["params"]), shapes, f"checkpoint {ckpt}",
                ExportError)
  target = {k: jax.ShapeDtypeStruct(v.shape, v.dtype, sharding=shardings[k])
            for k, v in shapes.items()}
  params = _flatten(_restore_tree(state_path, {"params": _unflatten(target)})["params"])

  reduce = {k: quant.reduction_axes(k[-1], axes[k]) for k in params} if quantize else {}
  quantized = sorted(_name(k) for k, r in reduce.items() if r is not None)

  def convert(tree):   # one compiled function for every parameter
    return {k: (w.astype(as_dtype(dtype)) if reduce.get(k) is None else quant.quantize(w, reduce[k]))
            for k, w in tree.items()}
  stored = jax.jit(convert)(params)
  num_params = int(sum(np.prod(v.shape) for v in shapes.values()))
  num_bytes = int(sum(x.size * x.dtype.itemsize for x in jax.tree.leaves(_unflatten(stored))))

  parent = os.path.dirname(out)
  os.makedirs(parent, exist_ok=True)
  tmp = tempfile.mkdtemp(dir=parent, prefix=f".{os.path.basename(out)}.partial-")
  try:
    ocp.PyTreeCheckpointer().save(os.path.join(tmp, PARAMS_DIRNAME),
                                  args=ocp.args.PyTreeSave({"params": _unflatten(stored)}))
    fields = {f.name: getattr(cfg, f.name) for f in dataclasses.fields(cfg) if f.name != "vocab"}
    atomic_write(os.path.join(tmp, MODEL_CONFIG_FILENAME), json.dumps(fields, indent=2, sort_keys=True))
    vocab.save(tmp)
    gin_text, tokenizers = _copy_tokenizers(
        gin_text, tmp, {"text": text_tokenizer, "speech": speech_tokenizer})
    atomic_write(os.path.join(tmp, OPERATIVE_CONFIG_FILENAME), gin_text)
    info = {"format": FORMAT, "version": VERSION, "source_workdir": os.path.abspath(workdir),
            "source_checkpoint": ckpt, "step": step, "dtype": dtype, "quantization": quantize,
            "quantized_params": quantized, "param_count": num_params, "param_bytes": num_bytes,
            "tokenizers": tokenizers, "vocab": vocab.to_dict()}
    atomic_write(os.path.join(tmp, INFO_FILENAME), json.dumps(info, indent=2, sort_keys=True))
    _publish(tmp, out)
  except BaseException:
    shutil.rmtree(tmp, ignore_errors=True)
    raise
  info["directory"] = out
  info["directory_bytes"] = directory_bytes(out)
  return info


def _publish(tmp: str, out: str) -> None:
  """Renames the complete export `tmp` to `out`; an earlier export at `out` is replaced."""
  if not os.path.exists(out):
    os.replace(tmp, out)
    return
  old = tempfile.mkdtemp(dir=os.path.dirname(out), prefix=f".{os.path.basename(out)}.old-")
  os.rmdir(old)
  os.replace(out, old)
  os.replace(tmp, out)
  shutil.rmtree(old, ignore_errors=True)


def directory_bytes(directory: str) -> int:
  return sum(os.path.getsize(os.path.join(d, f)) for d, _, files in os.walk(directory) for f in files)


# -- load -----------------------------------------------------------------------------------------
def is_inference_checkpoint(directory: str) -> bool:
  return os.path.isfile(os.path.join(directory, INFO_FILENAME))


def read_info(directory: str) -> dict:
  """export_info.json of an inference checkpoint (InferenceCheckpointError if there is none)."""
  path = os.path.join(directory, INFO_FILENAME)
  if not os.path.isdir(directory):
    raise InferenceCheckpointError(f"no inference checkpoint at {directory}: the directory does not "
                                   "exist; write one with `slm-export --workdir RUN --out DIR`")
  if not os.path.isfile(path):
    hint = (" (it is a training run: export it with `slm-export --workdir "
            f"{directory} --out DIR`)" if os.path.isdir(os.path.join(directory, "checkpoints")) else
            "; write one with `slm-export --workdir RUN --out DIR`")
    raise InferenceCheckpointError(f"{directory} is not an inference checkpoint (no {INFO_FILENAME})"
                                   + hint)
  with open(path) as f:
    info = json.load(f)
  if info.get("format") != FORMAT or info.get("version", 0) > VERSION:
    raise InferenceCheckpointError(
        f"{path}: format {info.get('format')!r} version {info.get('version')!r} is not one this "
        f"slm_jax reads ({FORMAT} <= {VERSION}); re-export it with this version's slm-export")
  return info


def load_model_config(directory: str, vocab: UnifiedVocab) -> ModelConfig:
  with open(os.path.join(directory, MODEL_CONFIG_FILENAME)) as f:
    fields = json.load(f)
  try:
    return ModelConfig(vocab=vocab, **fields)
  except TypeError as e:
    raise InferenceCheckpointError(f"{directory}/{MODEL_CONFIG_FILENAME} does not fit this "
                                   f"slm_jax's ModelConfig ({e}); re-export it") from e


def load_inference_checkpoint(directory: str, mesh: Optional[Mesh] = None, *, rules=None,
                              vocab: Optional[UnifiedVocab] = None):
  """(model, vocab, info) from an inference checkpoint.

  Args:
    mesh: restore onto this mesh with the model's logical-axis shardings (`rules`, default
      sharding.logical_axis_rules()); None: every parameter on the default device.
    vocab: the vocabulary the caller's tokenizers lay ids out for; a different one is a
      VocabMismatchError naming the fields.
  """
  info = read_info(directory)
  saved_vocab = UnifiedVocab.load(directory)
  UnifiedVocab.from_dict(info["vocab"]).check_compatible(saved_vocab, what=f"{directory}/{SPEC_FILENAME}")
  if vocab is not None:
    vocab.check_compatible(saved_vocab, what=f"inference checkpoint {directory}")
  cfg = load_model_config(directory, saved_vocab)
  graphdef, state, shapes, _ = _abstract_params(cfg)
  shardings = _shardings(state, mesh, rules)
  quantized = set(info.get("quantized_params", ()))
  stored_dtype = as_dtype(info["dtype"])
  params_path = os.path.join(os.path.abspath(directory), PARAMS_DIRNAME)
  if not os.path.isdir(params_path):
    raise InferenceCheckpointError(f"{directory} has no {PARAMS_DIRNAME}/: the export is incomplete; "
                                   "export it again")
  saved = _flatten(_saved_metadata(params_path)["params"])
  target = {}
  for key, sds in shapes.items():
    if _name(key) in quantized:
      scale = saved.get(key + (quant.SCALE,))
      scale_shape = tuple(scale.shape) if scale is not None else ()
      target[key + (quant.QVALUE,)] = jax.ShapeDtypeStruct(sds.shape, jnp.int8, sharding=shardings[key])
      target[key + (quant.SCALE,)] = jax.ShapeDtypeStruct(
          scale_shape, jnp.float32, sharding=_scale_sharding(shardings[key], scale_shape))
    else:
      target[key] = jax.ShapeDtypeStruct(sds.shape, stored_dtype, sharding=shardings[key])
  _check_shapes(saved, target, f"inference checkpoint {directory}", InferenceCheckpointError)
  restored = _flatten(_restore_tree(params_path, {"params": _unflatten(target)})["params"])
  entries = {k: {quant.QVALUE: restored[k + (quant.QVALUE,)], quant.SCALE: restored[k + (quant.SCALE,)]}
             for k in shapes if _name(k) in quantized}
  params = {k: restored[k] for k in shapes if k not in entries}
  if entries:
    params.update(jax.jit(
        lambda tree: {k: quant.dequantize(e, cfg.jnp_param_dtype) for k, e in tree.items()},
        out_shardings={k: shardings[k] for k in entries})(entries))
  state.replace_by_pure_dict(_unflatten(params))
  return nnx.merge(graphdef, state), saved_vocab, info
