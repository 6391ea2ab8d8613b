"""From a template output to packable documents: shift by one, then fit long ones into L.

A template output (contract section 3) of N ids becomes a *document* of N-1 positions,

    tokens = seq[:-1]   targets = seq[1:]   loss_weights = loss_mask[1:]
    speech_codes = codes[:-1]   target_speech_codes = codes[1:]        (K > 1)

so the shift happens inside each document and packing can never make a token predict the first
token of the next document. Documents longer than the row length L follow `long_documents`:

  "split"  (default) cut into pieces of at most L positions, each packed as its own document
           (positions restart at 0). Every target is kept: shifting happened before the cut.
  "drop"   skip the document and count it (`LongDocumentPolicy.num_dropped`).
  "truncate" keep the first L positions, count the rest as dropped tokens.

This is the one implementation of both rules: the grain pipeline runs LongDocumentPolicy as a
FlatMap, the seqio path calls the same code per example through tf.numpy_function.
"""
from __future__ import annotations

import threading

import numpy as np

import grain.experimental as gex

from slm_jax.errors import SlmError

DOC_FEATURES = ("tokens", "targets", "loss_weights")
CODE_FEATURES = ("speech_codes", "target_speech_codes")
POLICIES = ("split", "drop", "truncate")


class LongDocumentError(SlmError, ValueError):
  """An unknown long-document policy, or a document that needs more rows than allowed."""


def to_document(example: dict) -> dict:
  """Shifts one template output by one position (see module docstring)."""
  seq = np.asarray(example["tokens"], np.int32)
  doc = {"tokens": seq[:-1], "targets": seq[1:],
         "loss_weights": np.asarray(example["loss_mask"], np.float32)[1:]}
  codes = example.get("speech_codes")
  if codes is not None and np.shape(codes)[-1] > 0:
    codes = np.asarray(codes, np.int32)
    doc["speech_codes"], doc["target_speech_codes"] = codes[:-1], codes[1:]
  return doc


def doc_length(doc: dict) -> int:
  return int(doc["tokens"].shape[0])


class LongDocumentPolicy(gex.FlatMapTransform):
  """grain FlatMap applying the long-document policy for rows of `seq_len` positions."""

  def __init__(self, seq_len: int, policy: str = "split", max_pieces: int = 64):
    if policy not in POLICIES:
      raise LongDocumentError(f"long_documents={policy!r}; choose one of {POLICIES}")
    self.seq_len, self.policy = seq_len, policy
    self.max_fan_out = max_pieces if policy == "split" else 1
    self.num_dropped, self.num_dropped_tokens, self.num_split = 0, 0, 0
    self._lock = threading.Lock()

  def flat_map(self, doc: dict) -> list[dict]:
    n = doc_length(doc)
    if n == 0:
      return []
    if n <= self.seq_len:
      return [doc]
    if self.policy == "drop":
      with self._lock:
        self.num_dropped += 1
        self.num_dropped_tokens += n
      return []
    if self.policy == "truncate":
      with self._lock:
        self.num_dropped_tokens += n - self.seq_len
      return [{k: v[:self.seq_len] for k, v in doc.items()}]
    pieces = -(-n // self.seq_len)
    if pieces > self.max_fan_out:
      raise LongDocumentError(f"a document of {n} positions needs {pieces} rows of {self.seq_len}, more "
                       f"than max_pieces={self.max_fan_out}; raise max_pieces, use a longer seq_len, "
                       "or long_documents='drop'")
    with self._lock:
      self.num_split += 1
    return [{k: v[i:i + self.seq_len] for k, v in doc.items()} for i in range(0, n, self.seq_len)]

  def stats(self) -> dict:
    return {"long_documents_dropped": self.num_dropped, "tokens_dropped": self.num_dropped_tokens,
            "long_documents_split": self.num_split}


def finalize_row(row: dict) -> dict:
  """Renames grain's packing outputs to the batch keys of contract section 5."""
  out = {k: row[k] for k in DOC_FEATURES + CODE_FEATURES if k in row}
  out["segment_ids"] = row["tokens_segment_ids"].astype(np.int32)
  out["positions"] = row["tokens_positions"].astype(np.int32)
  out["loss_weights"] = out["loss_weights"].astype(np.float32)
  return out


def documents_from_rows(batches) -> list[dict]:
  """Inverse of packing: the documents of packed rows (dicts of [B, L, ...] or [L, ...] arrays).

  Documents come out in row order, segments in id order; padding (segment 0) is dropped. Used by
  `slm-data inspect` and by tests that check packing keeps every token exactly once.
  """
  if isinstance(batches, dict):
    batches = [batches]
  docs = []
  for batch in batches:
    seg = np.asarray(batch["segment_ids"])
    rows = seg.reshape(-1, seg.shape[-1]).shape[0]
    flat = {k: np.asarray(v).reshape((rows,) + np.shape(v)[seg.ndim - 1:]) for k, v in batch.items()}
    for r in range(rows):
      ids = flat["segment_ids"][r]
      for s in np.unique(ids[ids > 0]):
        sel = ids == s
        docs.append({k: v[r][sel] for k, v in flat.items() if k != "segment_ids"})
  return docs
