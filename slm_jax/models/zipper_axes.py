"""Each Zipper tower's parameters name their own logical axes (docs/architecture.md, "Zipper").

A tower is built from the shared model's modules (same parameter paths, so it restores from a
shared-architecture checkpoint and takes the Hugging Face warm start); `name_tower_axes` then
renames the logical axes of its parameters with the tower's prefix (`embed` -> `text_embed`,
`layers` -> `text_layers`, ...). Only the sharding metadata changes: paths, shapes and values stay.

The parameters of a tower are its backbone (`text/`), its input MLP (`text_input/`) and its
cross-attentions into the other tower (`text_cross/`; their key/value inputs have the other
tower's width but are this tower's parameters). `sharding.DEFAULT_RULES` maps each tower axis
where its shared counterpart goes; `logical_axis_rules.overrides` shards one tower differently.
"""
from __future__ import annotations

from flax import nnx

from slm_jax.sharding import tower_axis

_AXES = "out_sharding"   # the nnx.Variable metadata holding the logical axes (models/layers.param)


def name_tower_axes(module: nnx.Module, tower: str) -> int:
  """Renames the logical axes of every parameter under `module` for `tower`, in place; returns
  how many parameters were renamed. A parameter already named for a tower is an error."""
  n = 0
  for path, node in nnx.iter_graph(module):
    if not isinstance(node, nnx.Param) or not node.has_metadata(_AXES):
      continue
    axes = node.get_metadata(_AXES)
    try:
      node.set_metadata(_AXES, tuple(tower_axis(tower, a) for a in axes))
    except ValueError as e:
      raise ValueError(f"{tower} tower parameter {'/'.join(map(str, path))}: {e}") from None
    n += 1
  return n
