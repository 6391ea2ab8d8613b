"""Int8 weight-only quantization of the matmul weights: symmetric, one scale per output channel.

A weight is quantized when its logical axes include "embed" (every matmul weight and embedding
table of the model touches the model width; norm scales and biases do not). Its scale covers one
output channel: the reduction runs over the weight's input (contraction) axes only, so each
stacked layer ("layers" axis) and each output unit keeps its own scale:

    q/k/v, mlp gate/up, heads  [.., embed, out..]   reduce over embed
    attention out, mlp down    [.., in.., embed]    reduce over every axis but layers and embed
    embedding tables           [vocab|codebook, embed]   reduce over embed (a row's scale serves
                                                    the lookup and, tied, the output head)

    w ~= q * scale,   q = round(w / scale) in [-127, 127],   scale = max|w| / 127 per channel

Stored as plain arrays ({"qvalue": int8, "scale": float32}, the scale keeping the reduced axes
as size 1), so any Orbax reader can restore them; `dequantize` turns them back into a weight.
"""
from __future__ import annotations

from typing import Optional, Sequence

import jax.numpy as jnp

from slm_jax.sharding import shared_axis

QVALUE, SCALE = "qvalue", "scale"
METHODS = ("int8",)
_QMAX = 127.0


def reduction_axes(name: str, axes: Optional[Sequence[Optional[str]]]) -> Optional[tuple[int, ...]]:
  """The axes a weight's per-channel scale reduces over; None when it is not quantized.

  `name` is the parameter's last key (e.g. "kernel", "table"); `axes` its logical axes (a Zipper
  tower's, e.g. `text_embed`, count as their shared counterparts).
  """
  axes = tuple(shared_axis(a) for a in axes or ())
  if not axes or "embed" not in axes or len(axes) < 2:
    return None
  if name == "table" or axes[-1] != "embed":
    return (axes.index("embed"),)
  return tuple(i for i, a in enumerate(axes[:-1]) if a != "layers")


def scale_shape(shape: Sequence[int], reduce: Sequence[int]) -> tuple[int, ...]:
  return tuple(1 if i in reduce else d for i, d in enumerate(shape))


def quantize(w, reduce: Sequence[int]) -> dict:
  """{"qvalue": int8 like w, "scale": float32 with the `reduce` axes of size 1}."""
  w32 = jnp.asarray(w, jnp.float32)
  amax = jnp.max(jnp.abs(w32), axis=tuple(reduce), keepdims=True)
  scale = jnp.where(amax > 0, amax / _QMAX, 1.0).astype(jnp.float32)
  q = jnp.clip(jnp.round(w32 / scale), -_QMAX, _QMAX).astype(jnp.int8)
  return {QVALUE: q, SCALE: scale}


def dequantize(entry: dict, dtype) -> jnp.ndarray:
  """The weight `quantize` stored, in `dtype`."""
  return (entry[QVALUE].astype(jnp.float32) * entry[SCALE]).astype(dtype)
