"""The data-iterator interface between input pipelines and the train loop.

A data factory is a gin-configurable callable

    factory(*, split: str, batch_size: int, seq_len: int, vocab: UnifiedVocab,
            shard: HostShard, seed: int) -> DataIterator

(`batch_size` is the GLOBAL batch; `shard` says which global rows this process feeds). The
iterator returns this process's rows as numpy arrays with the keys of docs/data_contract.md
section 5, and its position as a JSON-serializable dict that the checkpoint stores per process
(item `data` of every checkpoint, see checkpoint.py), so a resumed run continues exactly.
"""
from __future__ import annotations

import dataclasses
from typing import Protocol, runtime_checkable

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding

from slm_jax import sharding
from slm_jax.errors import SlmError

# Logical axes of every batch key (dimension names per docs/data_contract.md section 5).
BATCH_AXES = {
    "tokens": ("batch", "length"),
    "targets": ("batch", "length"),
    "segment_ids": ("batch", "length"),
    "positions": ("batch", "length"),
    "loss_weights": ("batch", "length"),
    "speech_codes": ("batch", "length", None),
    "target_speech_codes": ("batch", "length", None),
}


@runtime_checkable
class DataIterator(Protocol):
  def __next__(self) -> dict[str, np.ndarray]: ...
  def get_state(self) -> dict: ...
  def set_state(self, state: dict) -> None: ...


@dataclasses.dataclass(frozen=True)
class HostShard:
  """Which rows of the global batch this process feeds: [first_row, first_row + num_rows)."""
  process_index: int
  process_count: int
  first_row: int
  num_rows: int


class BatchLayoutError(SlmError, ValueError):
  """The global batch does not divide among the processes the way the input pipelines feed it."""


class IteratorStateError(SlmError, ValueError):
  """A saved iterator state that does not belong to this iterator (another input backend,
  process or data configuration)."""


def process_rows(batch_size: int, process_index: int | None = None,
                 process_count: int | None = None) -> HostShard:
  """The rows an input pipeline gives a process: block i of batch_size / process_count rows.

  The one check that the global batch divides evenly among the processes; index and count
  default to jax.process_index() and jax.process_count().
  """
  index = jax.process_index() if process_index is None else int(process_index)
  count = jax.process_count() if process_count is None else int(process_count)
  if not 0 <= index < count:
    raise BatchLayoutError(f"process_index={index} outside [0, process_count={count})")
  if batch_size % count:
    raise BatchLayoutError(f"global batch_size={batch_size} is not divisible by {count} processes")
  rows = batch_size // count
  return HostShard(index, count, index * rows, rows)


def batch_sharding(mesh: Mesh, key: str, shape, rules=None) -> NamedSharding:
  if key not in BATCH_AXES:
    raise KeyError(f"unknown batch key {key!r}; the batch contract (docs/data_contract.md) has "
                   f"{sorted(BATCH_AXES)}")
  rules = rules if rules is not None else sharding.logical_axis_rules()
  return sharding.named_sharding(mesh, BATCH_AXES[key], shape, rules)


def host_shard(mesh: Mesh, batch_size: int, seq_len: int, rules=None) -> HostShard:
  """The contiguous block of global rows whose shards live on this process's devices."""
  sh = batch_sharding(mesh, "tokens", (batch_size, seq_len), rules)
  rows = set()
  for index in sh.addressable_devices_indices_map((batch_size, seq_len)).values():
    rows.update(range(batch_size)[index[0]])
  lo, hi = min(rows), max(rows) + 1
  if len(rows) != hi - lo:
    raise BatchLayoutError(f"this process's batch rows {sorted(rows)} are not contiguous on mesh "
                     f"{dict(mesh.shape)}; order the mesh so that each host owns a block of rows")
  return HostShard(jax.process_index(), jax.process_count(), lo, hi - lo)


def global_batch(local: dict[str, np.ndarray], mesh: Mesh, batch_size: int, rules=None) -> dict:
  """Global jax.Arrays from this process's rows (jax.make_array_from_process_local_data)."""
  out = {}
  for key, value in local.items():
    global_shape = (batch_size,) + value.shape[1:]
    out[key] = jax.make_array_from_process_local_data(
        batch_sharding(mesh, key, global_shape, rules), value, global_shape)
  return out
