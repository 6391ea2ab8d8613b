"""Rematerialization policies by name: what the backward pass keeps of each decoder block.

`REMAT_POLICIES` is the one table of names (`ModelConfig.remat_policy` is validated against it).
"""
from __future__ import annotations

import jax

# name -> jax.checkpoint policy. "none" saves every activation, which needs no jax.checkpoint at
# all; "full" (policy None) saves nothing and recomputes the whole block in the backward pass.
REMAT_POLICIES = {
    "none": jax.checkpoint_policies.everything_saveable,
    "full": None,
    "save_dots": jax.checkpoint_policies.checkpoint_dots,
    "save_dots_no_batch": jax.checkpoint_policies.dots_with_no_batch_dims_saveable,
}


def remat(fn, policy: str):
  """Wraps a per-layer function with the named rematerialization policy."""
  if policy not in REMAT_POLICIES:
    raise ValueError(f"unknown remat policy {policy!r}; use one of {tuple(REMAT_POLICIES)}")
  jax_policy = REMAT_POLICIES[policy]
  if jax_policy is jax.checkpoint_policies.everything_saveable:
    return fn
  return jax.checkpoint(fn, policy=jax_policy, prevent_cse=False)
