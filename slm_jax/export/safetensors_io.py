"""Reading and writing safetensors files with numpy only (no torch), bfloat16 included.

The format: an 8-byte little-endian header length, a JSON header mapping each tensor name to
{dtype, shape, data_offsets: [begin, end)} (offsets relative to the end of the header), then the
raw little-endian bytes. numpy has no bfloat16, so BF16 tensors are read as `ml_dtypes.bfloat16`
(shipped with jax). A Hugging Face checkpoint directory holds either `model.safetensors` or
shards listed in `model.safetensors.index.json`; `CheckpointReader` reads both lazily (memmap).
"""
from __future__ import annotations

import json
import os
import struct
from typing import Mapping

import ml_dtypes
import numpy as np

_DTYPES = {
    "F64": np.dtype(np.float64), "F32": np.dtype(np.float32), "F16": np.dtype(np.float16),
    "BF16": np.dtype(ml_dtypes.bfloat16), "I64": np.dtype(np.int64), "I32": np.dtype(np.int32),
    "I16": np.dtype(np.int16), "I8": np.dtype(np.int8), "U8": np.dtype(np.uint8),
    "BOOL": np.dtype(np.bool_),
}
_NAMES = {v: k for k, v in _DTYPES.items()}

SINGLE_FILE = "model.safetensors"
INDEX_FILE = "model.safetensors.index.json"


def read_header(path: str) -> tuple[dict, int]:
  """(header without __metadata__, byte offset where tensor data starts)."""
  with open(path, "rb") as f:
    raw = f.read(8)
    if len(raw) != 8:
      raise ValueError(f"{path} is not a safetensors file (shorter than 8 bytes)")
    (n,) = struct.unpack("<Q", raw)
    header = json.loads(f.read(n))
  header.pop("__metadata__", None)
  return header, 8 + n


class SafetensorsFile:
  """One .safetensors file, read lazily: `names()`, `shape(name)`, `get(name) -> np.ndarray`."""

  def __init__(self, path: str):
    self.path = path
    self.header, self.data_start = read_header(path)
    self._mm = None

  def names(self) -> list[str]:
    return list(self.header)

  def shape(self, name: str) -> tuple[int, ...]:
    return tuple(self.header[name]["shape"])

  def get(self, name: str) -> np.ndarray:
    info = self.header[name]
    if info["dtype"] not in _DTYPES:
      raise ValueError(f"{self.path}: tensor {name!r} has unsupported dtype {info['dtype']}")
    if self._mm is None:
      self._mm = np.memmap(self.path, dtype=np.uint8, mode="r")
    begin, end = info["data_offsets"]
    buf = self._mm[self.data_start + begin:self.data_start + end]
    return np.frombuffer(buf, dtype=_DTYPES[info["dtype"]]).reshape(info["shape"])


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
      raise FileNotFoundError(
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


def write_file(path: str, tensors: Mapping[str, np.ndarray], metadata: Mapping[str, str] | None = None):
  """Writes `tensors` to one safetensors file (atomically: temp file + rename)."""
  header: dict = {"__metadata__": dict(metadata or {"format": "pt"})}
  offset = 0
  arrays = []
  for name in sorted(tensors):
    a = np.ascontiguousarray(tensors[name])
    if a.dtype not in _NAMES:
      raise ValueError(f"tensor {name!r}: dtype {a.dtype} cannot be written to safetensors")
    header[name] = {"dtype": _NAMES[a.dtype], "shape": list(a.shape),
                    "data_offsets": [offset, offset + a.nbytes]}
    offset += a.nbytes
    arrays.append(a)
  raw = json.dumps(header, separators=(",", ":")).encode()
  raw += b" " * (-len(raw) % 8)  # align the data section to 8 bytes
  tmp = path + ".tmp"
  with open(tmp, "wb") as f:
    f.write(struct.pack("<Q", len(raw)))
    f.write(raw)
    for a in arrays:
      f.write(a.tobytes())
  os.replace(tmp, path)


