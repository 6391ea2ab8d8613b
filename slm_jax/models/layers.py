"""Basic layers: a logically-annotated dense projection, RMSNorm and rotary embeddings."""
from __future__ import annotations

from typing import Sequence

import jax
import jax.numpy as jnp
from flax import nnx


def param(rngs: nnx.Rngs, shape: Sequence[int], axes: Sequence[str], dtype, std: float | None = None,
          init: str = "normal") -> nnx.Param:
  """A parameter with logical axis names (`axes`, one per dimension) as sharding metadata."""
  if len(axes) != len(shape):
    raise ValueError(f"axes {axes} do not match shape {shape}")
  if init == "ones":
    value = jnp.ones(shape, dtype)
  elif init == "zeros":
    value = jnp.zeros(shape, dtype)
  else:
    value = (std * jax.random.normal(rngs.params(), shape, jnp.float32)).astype(dtype)
  return nnx.Param(value, out_sharding=tuple(axes), eager_sharding=False)


class DenseGeneral(nnx.Module):
  """x[..., *in] @ W[*in, *out] (+ b[*out]) with W annotated by logical axes; computes in `dtype`.

  The optional bias (`use_bias`, zero-initialized) carries the logical axes of the output dims.
  """

  def __init__(self, in_shape: Sequence[int], out_shape: Sequence[int], axes: Sequence[str], *,
               dtype, param_dtype, std: float, rngs: nnx.Rngs, use_bias: bool = False):
    self.in_shape, self.out_shape = tuple(in_shape), tuple(out_shape)
    self.dtype = dtype
    self.kernel = param(rngs, self.in_shape + self.out_shape, axes, param_dtype, std)
    self.bias = param(rngs, self.out_shape, tuple(axes)[len(self.in_shape):], param_dtype,
                      init="zeros") if use_bias else None

  def __call__(self, x):
    n_in = len(self.in_shape)
    letters = "abcdefgh"
    in_l, out_l = letters[:n_in], letters[n_in:n_in + len(self.out_shape)]
    x, kernel = x.astype(self.dtype), self.kernel[...].astype(self.dtype)
    if jax.default_backend() == "cpu" and x.ndim > n_in + 1:
      # XLA:CPU runs a 2-D [N, in] @ [in, out] dot (and its gradients) faster than the same
      # einsum with several leading dims; accelerators keep the einsum, whose leading dims stay
      # separately shardable.
      lead = x.shape[:x.ndim - n_in]
      y = jnp.einsum(f"n{in_l},{in_l}{out_l}->n{out_l}", x.reshape((-1,) + self.in_shape), kernel)
      y = y.reshape(lead + self.out_shape)
    else:
      y = jnp.einsum(f"...{in_l},{in_l}{out_l}->...{out_l}", x, kernel)
    return y if self.bias is None else y + self.bias[...].astype(self.dtype)


class RMSNorm(nnx.Module):
  def __init__(self, dim: int, *, eps: float, dtype, param_dtype, rngs: nnx.Rngs):
    self.eps, self.dtype = eps, dtype
    self.scale = param(rngs, (dim,), ("norm",), param_dtype, init="ones")

  def __call__(self, x):
    x32 = x.astype(jnp.float32)
    y = x32 * jax.lax.rsqrt(jnp.mean(x32 * x32, axis=-1, keepdims=True) + self.eps)
    return (y * self.scale[...].astype(jnp.float32)).astype(self.dtype)


def rotary(x_BLHE, positions_BL, theta: float):
  """Rotary embeddings from per-token positions (so packed rows restart at 0 per document).

  Uses the half-split (Llama / Hugging Face) layout: pairs are (i, i + E/2). The heads axis may
  hold query heads (H) or kv heads (G).
  """
  e = x_BLHE.shape[-1]
  inv_freq = 1.0 / (theta ** (jnp.arange(0, e, 2, dtype=jnp.float32) / e))     # [E/2]
  angles = positions_BL.astype(jnp.float32)[..., None] * inv_freq              # [B, L, E/2]
  sin, cos = jnp.sin(angles)[:, :, None, :], jnp.cos(angles)[:, :, None, :]
  x1, x2 = jnp.split(x_BLHE.astype(jnp.float32), 2, axis=-1)
  out = jnp.concatenate([x1 * cos - x2 * sin, x2 * cos + x1 * sin], axis=-1)
  return out.astype(x_BLHE.dtype)
