"""Mesh construction and logical-axis sharding (docs/architecture.md, logical axes).

Parameters and activations name their dimensions with logical axes; a rule table (gin-bound) maps
each logical axis to mesh axes (`data`, `fsdp`, `tensor`, `sequence`). Changing parallelism is a
change of mesh shape and rules, never of model code.

Logical axes used by the model:
  parameters:   vocab, embed, heads, kv_heads, head_dim, mlp, layers, channels, codebook, norm
  activations:  batch, length, act_embed, act_heads, act_kv_heads, act_mlp, act_vocab
(activation features have their own names so FSDP can shard `embed` in parameters while the batch,
not the feature dimension, is sharded in activations). A Zipper's parameters name their tower:
`text_embed`, `speech_mlp`, ... (`tower_axis`); by default each maps where its shared counterpart
does, and `logical_axis_rules.overrides` shards one tower differently:

    logical_axis_rules.overrides = [("speech_embed", None)]   # FSDP shards the text tower only
"""
from __future__ import annotations

import contextlib
import contextvars
import dataclasses
import logging
import math
from typing import Any, Mapping, Sequence

import gin
import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

MESH_AXES = ("data", "fsdp", "tensor", "sequence")

Rules = tuple[tuple[str, Any], ...]

# The parameter axes, and the Zipper towers that name their own copies of them.
PARAMETER_AXES = ("vocab", "embed", "heads", "kv_heads", "head_dim", "mlp", "layers", "channels",
                  "codebook", "norm")
TOWER_PREFIXES = ("text", "speech")


def tower_axis(tower: str, name: str | None) -> str | None:
  """A Zipper tower's name for a parameter axis (`embed` -> `text_embed`); None stays None."""
  if tower not in TOWER_PREFIXES:
    raise ValueError(f"unknown Zipper tower {tower!r}; use {TOWER_PREFIXES}")
  if name is None:
    return None
  if name not in PARAMETER_AXES:
    raise ValueError(f"{name!r} is not a parameter axis; use {PARAMETER_AXES}")
  return f"{tower}_{name}"


def shared_axis(name: str | None) -> str | None:
  """The shared-model axis a tower axis stands for (`text_embed` -> `embed`); others unchanged."""
  if name is not None:
    tower, _, rest = name.partition("_")
    if tower in TOWER_PREFIXES and rest in PARAMETER_AXES:
      return rest
  return name


def _tower_rows(rules) -> Rules:
  """Each tower's copy of the parameter rows present in `rules`."""
  return tuple((tower_axis(t, name), target) for t in TOWER_PREFIXES for name, target in rules
               if name in PARAMETER_AXES)


# One row per logical axis, no duplicates (checked). Mesh axes of size 1 make a rule inert, so the
# same table serves pure data parallel, FSDP, FSDP + tensor and + sequence parallel meshes.
_SHARED_RULES: Rules = (
    # activations
    ("batch", ("data", "fsdp")),
    ("length", "sequence"),
    ("act_embed", None),
    ("act_heads", "tensor"),
    ("act_kv_heads", "tensor"),
    ("act_mlp", "tensor"),
    ("act_vocab", "tensor"),
    # parameters
    ("vocab", "tensor"),
    ("embed", "fsdp"),
    ("heads", "tensor"),
    ("kv_heads", "tensor"),
    ("head_dim", None),
    ("mlp", "tensor"),
    ("layers", None),
    ("channels", None),
    ("codebook", None),
    ("norm", None),
)
# The Zipper towers' parameter axes go where their shared counterparts go.
DEFAULT_RULES: Rules = _SHARED_RULES + _tower_rows(_SHARED_RULES)


def _checked(rules, what: str) -> Rules:
  rules = tuple((str(k), tuple(v) if isinstance(v, list) else v) for k, v in rules)
  seen = set()
  for name, target in rules:
    if name in seen:
      raise ValueError(f"logical axis {name!r} appears twice in the {what}; keep one row")
    seen.add(name)
    for axis in (target if isinstance(target, tuple) else (target,)):
      if axis is not None and axis not in MESH_AXES:
        raise ValueError(f"rule {name!r} -> {target!r}: unknown mesh axis {axis!r}; use {MESH_AXES}")
  return rules


@gin.configurable
def logical_axis_rules(rules: Sequence[tuple[str, Any]] = DEFAULT_RULES,
                       overrides: Sequence[tuple[str, Any]] = ()) -> Rules:
  """The rule table in effect (bind `logical_axis_rules.rules` in gin to change it).

  A table without a tower's rows (`text_embed`, ...) gets them from its shared rows, so a table
  written for the shared model shards the Zipper's towers as it shards the shared model.
  `overrides`: rows that replace the table's rows of the same names, e.g. one tower's
  (`[("speech_embed", None)]` replicates what FSDP would shard of the speech tower).
  """
  rules = _checked(rules, "rule table")
  present = {name for name, _ in rules}
  rules += tuple(row for row in _tower_rows(rules) if row[0] not in present)
  overrides = dict(_checked(overrides, "overrides"))
  unknown = sorted(set(overrides) - {name for name, _ in rules})
  if unknown:
    raise ValueError(f"logical_axis_rules.overrides names {unknown}, which the rule table lacks; "
                     f"its axes: {[name for name, _ in rules]}")
  return tuple((name, overrides.get(name, target)) for name, target in rules)


def logical_to_spec(axes: Sequence[str | None] | None, rules: Rules) -> P:
  """Maps logical axis names to a PartitionSpec; a mesh axis is used at most once per array."""
  if axes is None:
    return P()
  table = dict(rules)
  used: set[str] = set()
  out = []
  for name in axes:
    target = table.get(name) if name is not None else None
    if name is not None and name not in table:
      raise KeyError(f"logical axis {name!r} has no rule; add it to logical_axis_rules.rules")
    targets = target if isinstance(target, tuple) else (target,)
    kept = tuple(t for t in targets if t is not None and t not in used)
    used.update(kept)
    out.append(None if not kept else (kept[0] if len(kept) == 1 else kept))
  return P(*out)


def _fit_spec_to_shape(spec: P, shape: Sequence[int], mesh: Mesh) -> P:
  """Drops mesh axes that do not divide a dimension (that dimension is then replicated)."""
  fitted = []
  for dim, entry in zip(shape, tuple(spec) + (None,) * (len(shape) - len(spec))):
    axes = () if entry is None else (entry if isinstance(entry, tuple) else (entry,))
    kept, size = [], 1
    for a in axes:
      if dim % (size * mesh.shape[a]) == 0:
        kept.append(a)
        size *= mesh.shape[a]
    fitted.append(None if not kept else (kept[0] if len(kept) == 1 else tuple(kept)))
  return P(*fitted)


def named_sharding(mesh: Mesh, axes: Sequence[str | None] | None, shape: Sequence[int],
                   rules: Rules) -> NamedSharding:
  return NamedSharding(mesh, _fit_spec_to_shape(logical_to_spec(axes, rules), shape, mesh))


# -- activation constraints ---------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class _ShardingContext:
  mesh: Mesh
  rules: Rules


_CONTEXT: contextvars.ContextVar[_ShardingContext | None] = contextvars.ContextVar(
    "slm_jax_sharding", default=None)


@contextlib.contextmanager
def activation_sharding(mesh: Mesh, rules: Rules | None = None):
  """Within this context (used while tracing), `constrain` pins activations to the mesh."""
  token = _CONTEXT.set(_ShardingContext(mesh, rules if rules is not None else logical_axis_rules()))
  try:
    yield
  finally:
    _CONTEXT.reset(token)


def constrain(x: jax.Array, axes: Sequence[str | None]) -> jax.Array:
  """with_sharding_constraint by logical axes; a no-op outside `activation_sharding`."""
  ctx = _CONTEXT.get()
  if ctx is None:
    return x
  if len(axes) != x.ndim:
    raise ValueError(f"constrain: {len(axes)} axes {tuple(axes)} for an array of shape {x.shape}")
  return jax.lax.with_sharding_constraint(x, named_sharding(ctx.mesh, axes, x.shape, ctx.rules))


def batch_shards() -> int:
  """How many shards the logical "batch" axis has in the current `activation_sharding` (1 outside)."""
  ctx = _CONTEXT.get()
  if ctx is None:
    return 1
  entry = logical_to_spec(("batch",), ctx.rules)[0]
  axes = () if entry is None else (entry if isinstance(entry, tuple) else (entry,))
  return math.prod(ctx.mesh.shape[a] for a in axes)


# -- mesh ---------------------------------------------------------------------------------------
def _resolve_shape(shape: Mapping[str, int], num_devices: int, what: str) -> tuple[int, ...]:
  sizes = [int(shape.get(a, 1)) for a in MESH_AXES]
  unknown = set(shape) - set(MESH_AXES)
  if unknown:
    raise ValueError(f"{what}: unknown mesh axes {sorted(unknown)}; use {MESH_AXES}")
  if sizes.count(-1) > 1:
    raise ValueError(f"{what}: at most one axis may be -1, got {dict(shape)}")
  known = math.prod(s for s in sizes if s != -1)
  if -1 in sizes:
    if num_devices % known:
      raise ValueError(f"{what}: {num_devices} devices do not divide by the fixed axes {dict(shape)}")
    sizes[sizes.index(-1)] = num_devices // known
  if math.prod(sizes) != num_devices:
    raise ValueError(f"{what}: mesh {dict(zip(MESH_AXES, sizes))} has {math.prod(sizes)} devices, "
                     f"but {num_devices} are available; use -1 on one axis to fill")
  return tuple(sizes)


@gin.configurable
def make_mesh(ici_shape: Mapping[str, int] | None = None,
              dcn_shape: Mapping[str, int] | None = None,
              devices: Sequence[jax.Device] | None = None) -> Mesh:
  """Builds the (data, fsdp, tensor, sequence) mesh over all processes' devices.

  Args:
    ici_shape: axis sizes within a slice (one -1 fills), default {"data": -1}.
    dcn_shape: axis sizes across slices for multi-slice TPU (one -1 fills); None for one slice.
    devices: defaults to jax.devices() (every process's devices).
  """
  devices = list(devices if devices is not None else jax.devices())
  ici_shape = dict(ici_shape or {"data": -1})
  if dcn_shape:
    num_slices = len({getattr(d, "slice_index", 0) for d in devices})
    dcn = _resolve_shape(dict(dcn_shape), num_slices, "dcn_shape")
    ici = _resolve_shape(ici_shape, len(devices) // num_slices, "ici_shape")
    from jax.experimental import mesh_utils  # pylint: disable=import-outside-toplevel
    grid = mesh_utils.create_hybrid_device_mesh(ici, dcn, devices=devices)
  else:
    ici = _resolve_shape(ici_shape, len(devices), "ici_shape")
    try:
      from jax.experimental import mesh_utils  # pylint: disable=import-outside-toplevel
      grid = mesh_utils.create_device_mesh(ici, devices=devices)
    except (AssertionError, NotImplementedError, ValueError):
      grid = np.asarray(devices).reshape(ici)
  logging.info("mesh %s over %d devices", dict(zip(MESH_AXES, grid.shape)), len(devices))
  return Mesh(grid, MESH_AXES)


# -- parameter state ----------------------------------------------------------------------------
def state_shardings(abstract_state, mesh: Mesh, rules: Rules | None = None):
  """NamedShardings for an nnx.State (abstract or concrete) from its logical-axis metadata."""
  from flax import nnx  # pylint: disable=import-outside-toplevel
  rules = rules if rules is not None else logical_axis_rules()
  specs = nnx.get_partition_spec(abstract_state)

  def to_sharding(leaf, spec):
    value = leaf.value if isinstance(leaf, nnx.Variable) else leaf
    spec = spec.value if isinstance(spec, nnx.Variable) else spec   # flattened to the Variable
    axes = tuple(spec) if isinstance(spec, P) else None
    return named_sharding(mesh, axes, value.shape, rules) if hasattr(value, "shape") else None

  return jax.tree.map(to_sharding, abstract_state, specs,
                      is_leaf=lambda x: isinstance(x, nnx.Variable))
