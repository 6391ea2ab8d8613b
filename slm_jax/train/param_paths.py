"""Parameter path names: the one way a params-dict leaf is named.

A parameter's path is the `/`-joined keys of the params dict, e.g.
`decoder/blocks/attn/query/kernel` or `heads/tied_embed/table`. Freeze and weight-decay patterns
match it, checkpoint mismatch errors name it, and optimizer-state shardings follow it.
"""
from __future__ import annotations


def path_keys(path) -> tuple[str, ...]:
  """The keys of a jax key path (DictKey, GetAttrKey, SequenceKey, ...) as strings."""
  return tuple(str(getattr(k, "key", getattr(k, "name", getattr(k, "idx", k)))) for k in path)


def param_path(path) -> str:
  """`/`-joined key path of a params-dict leaf."""
  return "/".join(path_keys(path))
