"""`jax.export` artifacts of the generation engine: prefill, insert and decode as serialized StableHLO.

    export_engine(engine, "out/")          # then, without slm_jax's model code:
    runner = ExportedRunner("out/")        # slm_jax/export/exported_runner.py

The engine's compiled functions (inference/engine.py) are pure functions of (parameters, inputs);
here they are traced with the parameters and the decode state as flat dicts of arrays keyed by
'/'-joined paths (no custom pytree nodes), lowered for several platforms from this machine, and
serialized. The directory holds

    manifest.json        what the loader needs: the functions' files, inputs and outputs (names,
                         shapes, dtypes; "b" = the symbolic slot dimension, "l" = prompt length),
                         max_length, prompt buckets, steps per call, sampling settings, stop ids,
                         the modality ids and modes, the PRNG implementation
    params.safetensors   the parameters, name -> array (bfloat16 kept as bfloat16)
    vocab_spec.json      the unified vocabulary
    prefill.jaxexport    one prompt row -> its one-row decode state (first token sampled)
    insert.jaxexport     (prefix state, decode state, slot) -> decode state
    generate.jaxexport   (params, decode state) -> (decode state, steps_per_call tokens per slot)

The slot dimension is symbolic in `insert` and `generate`, and the prompt length in `prefill`:
one artifact serves any number of slots and any prompt bucket (each new shape compiles once on
load). Sampling settings, stop ids and max_length are compiled in; export again to change them.
"""
from __future__ import annotations

import dataclasses
import json
import os
from typing import Sequence

import jax
import jax.numpy as jnp
import ml_dtypes  # noqa: F401  pylint: disable=unused-import  (numpy "bfloat16" for safetensors)
import numpy as np
from flax import nnx
from safetensors.numpy import save_file

from slm_jax.atomic_write import atomic_path, atomic_write
from slm_jax.errors import SlmError
from slm_jax.inference import sampling
from slm_jax.inference import engine as engine_lib
from slm_jax.inference.engine import Engine
from slm_jax.unified_vocab import PAD_ID

FORMAT = "slm_jax.jax_export/1"
MANIFEST = "manifest.json"
PARAMS_FILE = "params.safetensors"
DEFAULT_PLATFORMS = ("cpu", "cuda", "tpu")
SLOTS_DIM = "b"
LENGTH_DIM = "l"

PREFILL_INPUTS = ("tokens_1L", "codes_1LK", "length", "key_2", "mode", "modality", "max_new")
STEP_OUTPUTS = ("tokens_NB", "codes_NBK", "emitted_NB", "done_NB")


class JaxExportError(SlmError, ValueError):
  """The engine cannot be exported as asked (unknown platform, a shape that does not lower)."""


def path_name(path) -> str:
  """'/'-joined name of a pytree key path (attribute, dict key or index entries)."""
  parts = []
  for k in path:
    for attr in ("name", "key", "idx"):
      if hasattr(k, attr):
        parts.append(str(getattr(k, attr)))
        break
    else:
      parts.append(str(k))
  return "/".join(parts)


@dataclasses.dataclass(frozen=True)
class FlatTree:
  """A pytree's structure with '/'-joined names for its leaves: to and from flat dicts."""
  treedef: object
  names: tuple[str, ...]

  @classmethod
  def of(cls, tree, name_fn=path_name) -> "FlatTree":
    with_paths, treedef = jax.tree_util.tree_flatten_with_path(tree)
    names = tuple(name_fn(p) for p, _ in with_paths)
    if len(set(names)) != len(names):
      raise JaxExportError(f"pytree leaf names collide: {names}")
    return cls(treedef, names)

  def flatten(self, tree) -> dict:
    return dict(zip(self.names, jax.tree.leaves(tree)))

  def unflatten(self, flat: dict):
    return jax.tree.unflatten(self.treedef, [flat[n] for n in self.names])


def param_name(path) -> str:
  """A parameter's name: its path without the Variable's trailing 'value'."""
  name = path_name(path)
  return name[:-len("/value")] if name.endswith("/value") else name


def flat_params(engine: Engine) -> dict[str, np.ndarray]:
  """The engine's parameters as name -> numpy array."""
  flat = FlatTree.of(engine.params, param_name).flatten(engine.params)
  return {n: np.asarray(x) for n, x in flat.items()}


def _slot_axes(state_tree: FlatTree, state) -> dict[str, int]:
  """The slot axis of each decode-state leaf: the axis the engine's `insert` writes a slot into."""
  return {n: engine_lib._batch_axis(x) for n, x in state_tree.flatten(state).items()}  # pylint: disable=protected-access


def _symbolic(shape_dtype, axis: int, dim) -> jax.ShapeDtypeStruct:
  shape = list(shape_dtype.shape)
  shape[axis] = dim
  return jax.ShapeDtypeStruct(tuple(shape), shape_dtype.dtype)


def _spec(x) -> dict:
  return {"shape": [d if isinstance(d, int) else str(d) for d in x.shape],
          "dtype": jnp.dtype(x.dtype).name}


def _specs(flat: dict) -> dict:
  return {name: _spec(x) for name, x in flat.items()}


def export_engine(engine: Engine, directory: str, *,
                  platforms: Sequence[str] = DEFAULT_PLATFORMS) -> str:
  """Writes the engine's prefill / insert / generate artifacts, parameters and manifest.

  platforms: lowered for each (from this machine); the loader runs on any of them.
  """
  unknown = sorted(set(platforms) - set(DEFAULT_PLATFORMS))
  if unknown or not platforms:
    raise JaxExportError(f"platforms={list(platforms)}; use some of {list(DEFAULT_PLATFORMS)}")
  platforms = tuple(platforms)
  if getattr(engine, "mesh", None) is not None and engine.mesh.size > 1:
    raise JaxExportError("export an engine without a mesh (single device): the artifacts are "
                         "for one device of each platform")
  params = flat_params(engine)
  param_tree = FlatTree.of(engine.params, param_name)
  state0 = jax.eval_shape(engine.init_decode_state)
  state_tree = FlatTree.of(state0)
  slot_axes = _slot_axes(state_tree, state0)

  # The engine's jitted functions, as pure functions of flat dicts (PREFILL_INPUTS after params).
  # pylint: disable=protected-access
  def prefill(p, *inputs):
    state = engine._prefill_fn(param_tree.unflatten(p), *inputs)
    return state_tree.flatten(state)

  def insert(prefix, state, slot):
    new = engine._insert_fn(state_tree.unflatten(prefix), state_tree.unflatten(state), slot)
    return state_tree.flatten(new)

  def generate(p, state):
    new, out = engine._generate_fn(param_tree.unflatten(p), state_tree.unflatten(state))
    return state_tree.flatten(new), {n: getattr(out, n) for n in STEP_OUTPUTS}

  param_args = {n: jax.ShapeDtypeStruct(x.shape, x.dtype) for n, x in params.items()}
  (b,) = jax.export.symbolic_shape(SLOTS_DIM)
  (l,) = jax.export.symbolic_shape(LENGTH_DIM,
                                   constraints=(f"{LENGTH_DIM} <= {engine.max_length}",))
  k_extra = engine.num_extra
  i32 = lambda *shape: jax.ShapeDtypeStruct(shape, jnp.int32)  # noqa: E731
  prefill_args = (i32(1, l), i32(1, l, k_extra), i32(), jax.ShapeDtypeStruct((2,), jnp.uint32),
                  i32(), i32(), i32())
  flat0 = state_tree.flatten(state0)
  state_args = {n: _symbolic(x, slot_axes[n], b) for n, x in flat0.items()}
  prefix_args = {n: _symbolic(x, slot_axes[n], 1) for n, x in flat0.items()}

  def lower(fn, *args):
    try:
      return jax.export.export(jax.jit(fn), platforms=platforms)(*args)
    except Exception as e:  # the lowering error names the op; say which function failed
      raise JaxExportError(f"jax.export of {fn.__name__} failed for platforms {platforms}: {e}") from e

  exported = {"prefill": lower(prefill, param_args, *prefill_args),
              "insert": lower(insert, prefix_args, state_args, i32()),
              "generate": lower(generate, param_args, state_args)}

  os.makedirs(directory, exist_ok=True)
  files = {}
  for name, exp in exported.items():
    files[name] = f"{name}.jaxexport"
    atomic_write(os.path.join(directory, files[name]), bytes(exp.serialize()))
  with atomic_path(os.path.join(directory, PARAMS_FILE)) as tmp:
    save_file({n: np.ascontiguousarray(x) for n, x in params.items()}, tmp)
  vocab_path = engine.vocab.save(directory)

  gen = exported["generate"]
  _, step_avals = jax.tree.unflatten(gen.out_tree, gen.out_avals)
  ids = engine.ids
  manifest = {
      "format": FORMAT,
      "jax_version": jax.__version__,
      "platforms": list(platforms),
      "files": files,
      "params_file": PARAMS_FILE,
      "vocab_spec": os.path.basename(vocab_path),
      "params": _specs(params),
      "state": {n: dict(_spec(state_args[n]), slot_axis=slot_axes[n]) for n in flat0},
      "prefill_inputs": {n: _spec(a) for n, a in zip(PREFILL_INPUTS, prefill_args)},
      "step_outputs": {n: _spec(step_avals[n]) for n in STEP_OUTPUTS},
      "signatures": {
          "prefill": "(params, " + ", ".join(PREFILL_INPUTS) + ") -> state with slots=1",
          "insert": "(prefix_state, state, slot) -> state",
          "generate": "(params, state) -> (state, step_outputs)",
      },
      "max_length": engine.max_length,
      "buckets": list(engine.buckets),
      "steps_per_call": engine.steps_per_call,
      "slots": engine.slots,
      "num_extra_channels": k_extra,
      "sampling": dataclasses.asdict(engine.sampling),
      "stop_ids": list(engine.stop_ids),
      "cache_dtype": jnp.dtype(engine.cache_dtype).name,
      "modes": dict(sampling.MODES),
      "modality_ids": dataclasses.asdict(ids),
      "vocab_size": engine.vocab.size,
      "pad_id": PAD_ID,
      "prng_impl": str(jax.config.jax_default_prng_impl),
  }
  atomic_write(os.path.join(directory, MANIFEST), json.dumps(manifest, indent=2))
  return directory
