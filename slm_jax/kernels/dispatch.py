"""The one place that chooses the attention implementation.

Every model calls `attention(...)`; the implementation is picked by name (gin-bindable default)
and per backend. Step 4 registers Pallas kernels (TPU Mosaic, GPU, interpret mode on CPU) here.
"""
from __future__ import annotations

from typing import Callable

import gin
import jax

from slm_jax.kernels import blockwise, reference

AttentionFn = Callable[..., jax.Array]

_IMPLEMENTATIONS: dict[str, AttentionFn] = {}
_TAKES_CAUSAL: set[str] = set()


def register(name: str, fn: AttentionFn, *, takes_causal: bool = False) -> None:
  """Adds an implementation with the signature of `reference.attention`.

  `takes_causal`: fn also accepts `causal=` (the caller's promise that order strictly increases
  with index within a segment), which lets it skip key blocks above the diagonal.
  """
  _IMPLEMENTATIONS[name] = fn
  if takes_causal:
    _TAKES_CAUSAL.add(name)


register("xla", reference.attention)
register("xla_blockwise", blockwise.attention, takes_causal=True)


def available() -> tuple[str, ...]:
  return tuple(sorted(_IMPLEMENTATIONS))


@gin.configurable
def default_implementation(name: str = "auto") -> str:
  """`auto` picks the best registered implementation for the current backend."""
  if name != "auto":
    return name
  backend = jax.default_backend()
  preferred = {"tpu": ("pallas_tpu",), "gpu": ("pallas_gpu",), "cpu": ("xla_blockwise",)}
  for candidate in preferred.get(backend, ()):
    if candidate in _IMPLEMENTATIONS:
      return candidate
  return "xla"


def attention(q_BLHD, k_BSKD, v_BSKD, q_segment_ids, q_order, kv_segment_ids, kv_order,
              *, implementation: str | None = None, scale: float | None = None,
              causal: bool = False):
  """(segment, order)-masked grouped-query attention; see `reference.attention` for the contract.

  `causal=True` is a static promise (self-attention with `positions` as order): within a segment,
  order strictly increases with index. Results are the same; implementations may skip work.
  """
  name = implementation or default_implementation()
  try:
    fn = _IMPLEMENTATIONS[name]
  except KeyError:
    raise ValueError(f"unknown attention implementation {name!r}; available: {available()}") from None
  extra = {"causal": causal} if name in _TAKES_CAUSAL else {}
  return fn(q_BLHD, k_BSKD, v_BSKD, q_segment_ids, q_order, kv_segment_ids, kv_order, scale=scale,
            **extra)
