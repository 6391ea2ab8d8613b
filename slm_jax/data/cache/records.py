"""Byte format of one cached example (docs/data_contract.md section 4).

A record is one template output (contract section 3) in a compact little-endian layout that
decodes with three `np.frombuffer` calls and no parsing library:

    b"SLM1"                      magic and format version
    uint32 N, uint32 K-1         sequence length, extra speech channels (K - 1)
    int32[N]     tokens          unified ids
    float32[N]   loss_mask
    int32[N, K-1] speech_codes   only when K > 1
"""
from __future__ import annotations

import struct

import numpy as np

from slm_jax.errors import SlmError

MAGIC = b"SLM1"
FORMAT_NAME = "slm1"
_HEADER = struct.Struct("<4sII")


class RecordFormatError(SlmError, ValueError):
  """A record is not in the slm1 format (wrong file, or a cache made by another tool)."""


def encode(example: dict) -> bytes:
  """Serializes {tokens int[N], loss_mask float[N], speech_codes? int[N, K-1]} to bytes."""
  tokens = np.asarray(example["tokens"], dtype=np.int32)
  loss_mask = np.asarray(example["loss_mask"], dtype=np.float32)
  if tokens.ndim != 1 or loss_mask.shape != tokens.shape:
    raise RecordFormatError(f"tokens must be [N] and loss_mask [N]; got {tokens.shape} and "
                            f"{loss_mask.shape}")
  n = tokens.shape[0]
  codes = example.get("speech_codes")
  if codes is None:
    codes = np.zeros((n, 0), np.int32)
  codes = np.asarray(codes, dtype=np.int32)
  if codes.ndim != 2 or codes.shape[0] != n:
    raise RecordFormatError(f"speech_codes must be [N={n}, K-1]; got {codes.shape}")
  return b"".join((_HEADER.pack(MAGIC, n, codes.shape[1]), tokens.tobytes(), loss_mask.tobytes(),
                   np.ascontiguousarray(codes).tobytes()))


def decode(record: bytes) -> dict:
  """Inverse of `encode`; `speech_codes` is present only when C > 0."""
  if len(record) < _HEADER.size:
    raise RecordFormatError(f"record of {len(record)} bytes is too short for an slm1 header")
  magic, n, extra = _HEADER.unpack_from(record)
  if magic != MAGIC:
    raise RecordFormatError(f"record starts with {magic!r}, expected {MAGIC!r}: not an slm_jax cache "
                            "record; rebuild the cache with `slm-data cache`")
  expected = _HEADER.size + 4 * n * (2 + extra)
  if len(record) != expected:
    raise RecordFormatError(f"slm1 record has {len(record)} bytes, header says {expected} (N={n}, K-1={extra})")
  off = _HEADER.size
  out = {"tokens": np.frombuffer(record, np.int32, n, off),
         "loss_mask": np.frombuffer(record, np.float32, n, off + 4 * n)}
  if extra:
    out["speech_codes"] = np.frombuffer(record, np.int32, n * extra, off + 8 * n).reshape(n, extra)
  return out
