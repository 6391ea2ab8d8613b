"""The one place that names attention implementations and chooses among them.

Every model calls `attention(...)` with an implementation name (`ModelConfig.attention_impl`, the
only setting), and the decode step calls `cached_attention(...)` with the same name. A new kernel
is one `register(...)` call below: its name, its function, whether it takes the causal promise,
and on which backends `auto` prefers it. The table per backend and case is in docs/kernels.md.
"""
from __future__ import annotations

import dataclasses
from typing import Callable, Mapping

import jax

from slm_jax.kernels import blockwise, cached, decode, flash, library, reference, sharded

AttentionFn = Callable[..., jax.Array]

AUTO = "auto"


@dataclasses.dataclass(frozen=True)
class Implementation:
  """A registered attention implementation.

  fn: has the signature of `reference.attention`.
  takes_causal: fn also accepts `causal=` (the caller's promise that order strictly increases with
    index within a segment), which lets it skip key blocks above the diagonal.
  auto_priority: backend ("cpu", "gpu", "tpu") -> priority; `auto` picks the registered
    implementation with the highest priority for the current backend ("xla" when none has one).
  """
  name: str
  fn: AttentionFn
  takes_causal: bool = False
  auto_priority: Mapping[str, int] = dataclasses.field(default_factory=dict)


_IMPLEMENTATIONS: dict[str, Implementation] = {}


def register(name: str, fn: AttentionFn, *, takes_causal: bool = False,
             auto_priority: Mapping[str, int] | None = None) -> None:
  """Adds an implementation (see `Implementation` for the arguments)."""
  if name == AUTO or name in _IMPLEMENTATIONS:
    raise ValueError(f"attention implementation {name!r} is already taken")
  _IMPLEMENTATIONS[name] = Implementation(name, fn, takes_causal, dict(auto_priority or {}))


register("xla", reference.attention)
register("xla_blockwise", blockwise.attention, takes_causal=True, auto_priority={"cpu": 1})
# Pallas kernels run per shard (shard_map over batch and kv heads) when a mesh is active. None is
# `auto`'s choice yet: interpret mode on CPU checks their numbers, not their Mosaic / Triton
# lowering or speed; give them a priority once the `gpu` / `tpu` tests and bench/attention.py ran
# on the device (docs/kernels.md).
register("pallas", sharded.on_mesh(flash.attention), takes_causal=True)
register("splash", sharded.on_mesh(library.splash_attention), takes_causal=True)
register("cudnn", sharded.on_mesh(library.cudnn_attention), takes_causal=True)


def names() -> tuple[str, ...]:
  """Every name `ModelConfig.attention_impl` accepts: `auto` and the registered implementations."""
  return (AUTO,) + tuple(sorted(_IMPLEMENTATIONS))


def check_name(name: str) -> None:
  """Raises ValueError unless `name` is `auto` or a registered implementation."""
  if name not in names():
    raise ValueError(f"unknown attention implementation {name!r}; use one of {names()}")


def resolve(name: str = AUTO, backend: str | None = None) -> str:
  """The implementation `name` stands for on `backend` (default: JAX's): `auto` picks per backend."""
  check_name(name)
  if name != AUTO:
    return name
  backend = backend or jax.default_backend()
  ranked = [(impl.auto_priority[backend], impl.name) for impl in _IMPLEMENTATIONS.values()
            if backend in impl.auto_priority]
  return max(ranked)[1] if ranked else "xla"


def attention(q_BLHE, k_BSGE, v_BSGE, q_segment_ids, q_order, kv_segment_ids, kv_order,
              *, implementation: str = AUTO, scale: float | None = None, causal: bool = False):
  """(segment, order)-masked grouped-query attention; see `reference.attention` for the contract.

  `causal=True` is a static promise (self-attention with `positions` as order): within a segment,
  order strictly increases with index. Results are the same; implementations may skip work.
  """
  impl = _IMPLEMENTATIONS[resolve(implementation)]
  extra = {"causal": causal} if impl.takes_causal else {}
  return impl.fn(q_BLHE, k_BSGE, v_BSGE, q_segment_ids, q_order, kv_segment_ids, kv_order,
                 scale=scale, **extra)


def cached_attention(q_BLHE, k_new_BLGE, v_new_BLGE, q_segment_ids, q_order, k_cache_BGSE,
                     v_cache_BGSE, cache_segment_ids, cache_order, *, implementation: str = AUTO):
  """The decode step (`cached.attention`'s contract): with `pallas`, the cache part runs in a kernel
  (`decode.attention`: ours, or the GPU decode kernel for one-token steps where it fits); every
  other implementation uses the XLA path."""
  fn = decode.attention if resolve(implementation) == "pallas" else cached.attention
  return fn(q_BLHE, k_new_BLGE, v_new_BLGE, q_segment_ids, q_order, k_cache_BGSE, v_cache_BGSE,
            cache_segment_ids, cache_order)
