"""Hugging Face safetensors checkpoints, read and written with the `safetensors` package (numpy).

A checkpoint directory holds either `model.safetensors` or shards listed in
`model.safetensors.index.json`; `CheckpointReader` opens each file lazily (memory-mapped by
`safe_open`). BF16 tensors come back as `ml_dtypes.bfloat16` arrays: importing ml_dtypes registers
that dtype with numpy, which safetensors' numpy path relies on for BF16.
"""
from __future__ import annotations

import json
import os
from typing import Mapping

import ml_dtypes  # noqa: F401  pylint: disable=unused-import  (registers numpy's "bfloat16")
import numpy as np
import safetensors
from safetensors.numpy import save_file

from slm_jax.atomic_write import atomic_path
from slm_jax.errors import SlmError

SINGLE_FILE = "model.safetensors"
INDEX_FILE = "model.safetensors.index.json"


class CheckpointNotFoundError(SlmError, FileNotFoundError):
  """The directory holds no safetensors checkpoint (or a file the index names is missing)."""


class SafetensorsReadError(SlmError, ValueError):
  """A file is not a readable safetensors file."""


class SafetensorsFile:
  """One .safetensors file, read lazily: `names()`, `shape(name)`, `dtype(name)`, `get(name)`."""

  def __init__(self, path: str):
    self.path = path
    if not os.path.exists(path):
      raise CheckpointNotFoundError(f"safetensors file {path} does not exist")
    try:
      self._file = safetensors.safe_open(path, framework="np")
    except (safetensors.SafetensorError, OSError) as e:
      raise SafetensorsReadError(f"{path} is not a readable safetensors file: {e}") from e

  def names(self) -> list[str]:
    return list(self._file.keys())

  def shape(self, name: str) -> tuple[int, ...]:
    return tuple(self._file.get_slice(name).get_shape())

  def dtype(self, name: str) -> str:
    """The safetensors dtype code, e.g. "F32" or "BF16"."""
    return self._file.get_slice(name).get_dtype()

  def get(self, name: str) -> np.ndarray:
    return self._file.get_tensor(name)


class CheckpointReader:
  """All tensors of a Hugging Face checkpoint directory (single file or sharded with an index)."""

  def __init__(self, directory: str):
    self.directory = directory
    index_path = os.path.join(directory, INDEX_FILE)
    single_path = os.path.join(directory, SINGLE_FILE)
    if os.path.exists(index_path):
      with open(index_path) as f:
        weight_map = json.load(f)["weight_map"]
    elif os.path.exists(single_path):
      weight_map = {name: SINGLE_FILE for name in SafetensorsFile(single_path).names()}
    else:
      raise CheckpointNotFoundError(
          f"no {SINGLE_FILE} or {INDEX_FILE} in {directory}: pass a Hugging Face checkpoint "
          "directory saved with safetensors (save_pretrained(..., safe_serialization=True))")
    self._files: dict[str, SafetensorsFile] = {}
    self._where = dict(weight_map)

  def names(self) -> list[str]:
    return sorted(self._where)

  def __contains__(self, name: str) -> bool:
    return name in self._where

  def _file(self, name: str) -> SafetensorsFile:
    if name not in self._where:
      raise KeyError(f"tensor {name!r} is missing from the checkpoint in {self.directory}")
    fname = self._where[name]
    if fname not in self._files:
      self._files[fname] = SafetensorsFile(os.path.join(self.directory, fname))
    return self._files[fname]

  def shape(self, name: str) -> tuple[int, ...]:
    return self._file(name).shape(name)

  def get(self, name: str) -> np.ndarray:
    return self._file(name).get(name)


def write_file(path: str, tensors: Mapping[str, np.ndarray],
               metadata: Mapping[str, str] | None = None) -> None:
  """Writes `tensors` to one safetensors file, atomically.

  metadata defaults to {"format": "pt"}, which transformers expects of a checkpoint it loads.
  """
  arrays = {name: np.ascontiguousarray(a) for name, a in tensors.items()}
  with atomic_path(path, suffix=".safetensors") as tmp:
    save_file(arrays, tmp, metadata=dict(metadata or {"format": "pt"}))
