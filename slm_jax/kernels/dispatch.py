"""The one place that chooses the attention implementation.

Every model calls `attention(...)`; the implementation is picked by name (gin-bindable default)
and per backend. Step 4 registers Pallas kernels (TPU Mosaic, GPU, interpret mode on CPU) here.
"""
from __future__ import annotations

from typing import Callable

import gin
import jax

from slm_jax.kernels import reference

AttentionFn = Callable[..., jax.Array]

_IMPLEMENTATIONS: dict[str, AttentionFn] = {"xla": reference.attention}


def register(name: str, fn: AttentionFn) -> None:
  """Adds an implementation with the signature of `reference.attention`."""
  _IMPLEMENTATIONS[name] = fn


def available() -> tuple[str, ...]:
  return tuple(sorted(_IMPLEMENTATIONS))


@gin.configurable
def default_implementation(name: str = "auto") -> str:
  """`auto` picks the best registered implementation for the current backend."""
  if name != "auto":
    return name
  backend = jax.default_backend()
  for candidate in {"tpu": ("pallas_tpu",), "gpu": ("pallas_gpu",)}.get(backend, ()):
    if candidate in _IMPLEMENTATIONS:
      return candidate
  return "xla"


def attention(q_BLHD, k_BSKD, v_BSKD, q_segment_ids, q_order, kv_segment_ids, kv_order,
              *, implementation: str | None = None, scale: float | None = None):
  """(segment, order)-masked grouped-query attention; see `reference.attention` for the contract."""
  name = implementation or default_implementation()
  try:
    fn = _IMPLEMENTATIONS[name]
  except KeyError:
    raise ValueError(f"unknown attention implementation {name!r}; available: {available()}") from None
  return fn(q_BLHD, k_BSKD, v_BSKD, q_segment_ids, q_order, kv_segment_ids, kv_order, scale=scale)
