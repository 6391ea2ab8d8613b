"""The plain seqio / tf.data path: template outputs -> the batch of contract section 5.

Same semantics as the grain pipeline (documents.py): each example is shifted by one inside
itself, documents longer than L follow the same `long_documents` policy, then rows are packed
greedily with seqio's `trim_and_pack_dataset` (the tf.data packer seqio's own feature converters
use). seqio packs rank-1 non-zero int32 features only, so the K-1 extra speech channels travel
flattened ([n * (K-1)] with length L * (K-1), which packs exactly when the tokens do) and every
feature is encoded non-zero (`_encode_nonzero`), then decoded after packing.

For quick experiments on a seqio task without a cache; training at scale uses the grain pipeline
(checkpointable state, per-process sharding of caches). The iterator's state is the number of
batches served: restoring rebuilds the (seeded, deterministic) dataset and skips that many.
"""
from __future__ import annotations

from typing import Optional

import gin
import jax
import numpy as np
import seqio
import tensorflow as tf

from slm_jax.data.pipeline.documents import POLICIES

STATE_FORMAT = "slm_jax.tfdata_iterator/1"


def _to_document(ex: dict, num_channels: int) -> dict:
  seq = tf.cast(ex["tokens"], tf.int32)
  doc = {"tokens": seq[:-1], "targets": seq[1:],
         "loss_weights": tf.cast(ex["loss_mask"], tf.float32)[1:]}
  if num_channels > 1:
    codes = tf.cast(ex["speech_codes"], tf.int32)
    doc["speech_codes"], doc["target_speech_codes"] = codes[:-1], codes[1:]
  return doc


def _apply_long_policy(ds: tf.data.Dataset, seq_len: int, policy: str) -> tf.data.Dataset:
  if policy not in POLICIES:
    raise ValueError(f"long_documents={policy!r}; choose one of {POLICIES}")
  n_of = lambda d: tf.shape(d["tokens"])[0]
  if policy == "drop":
    return ds.filter(lambda d: n_of(d) <= seq_len)
  if policy == "truncate":
    return ds.map(lambda d: {k: v[:seq_len] for k, v in d.items()})

  def pieces(d):
    starts = tf.range(0, n_of(d), seq_len)
    return tf.data.Dataset.from_tensor_slices(starts).map(
        lambda s: {k: v[s:s + seq_len] for k, v in d.items()})
  return ds.flat_map(pieces)


def _encode_nonzero(d: dict) -> dict:
  """seqio's tf packer casts to int32 and cuts each feature at its count of non-zeros, so every
  packed feature must be non-zero int32: codes and targets travel +1, weights as their float bits +1."""
  out = {"tokens": d["tokens"], "targets": d["targets"] + 1,
         "loss_weights": tf.bitcast(d["loss_weights"], tf.int32) + 1}
  for k in ("speech_codes", "target_speech_codes"):
    if k in d:
      out[k] = tf.reshape(d[k], [-1]) + 1
  return out


def pack_tf_dataset(ds: tf.data.Dataset, seq_len: int, num_channels: int = 1,
                    long_documents: str = "split") -> tf.data.Dataset:
  """Template outputs (tokens, loss_mask, speech_codes?) -> packed rows with the batch keys."""
  c = num_channels - 1
  ds = ds.map(lambda ex: _to_document(ex, num_channels), num_parallel_calls=tf.data.AUTOTUNE)
  ds = _apply_long_policy(ds, seq_len, long_documents)
  ds = ds.map(_encode_nonzero, num_parallel_calls=tf.data.AUTOTUNE)
  lengths = {"tokens": seq_len, "targets": seq_len, "loss_weights": seq_len}
  if c:
    lengths.update(speech_codes=seq_len * c, target_speech_codes=seq_len * c)
  ds = seqio.utils.trim_and_pack_dataset(ds, lengths, use_custom_ops=False)

  def finalize(row):
    seg = tf.cast(row["tokens_segment_ids"], tf.int32)
    real = seg > 0
    out = {"tokens": row["tokens"], "targets": tf.where(real, row["targets"] - 1, 0),
           "loss_weights": tf.where(real, tf.bitcast(row["loss_weights"] - 1, tf.float32), 0.0),
           "segment_ids": seg, "positions": tf.cast(row["tokens_positions"], tf.int32)}
    for k in ("speech_codes", "target_speech_codes"):
      if c:
        codes = tf.reshape(row[k], [seq_len, c]) - 1
        out[k] = tf.where(real[:, None], codes, 0)
    return out
  return ds.map(finalize, num_parallel_calls=tf.data.AUTOTUNE)


class TfDataBatchIterator:
  """numpy batches from a tf.data pipeline; state = batches served (restore replays and skips)."""

  def __init__(self, build, *, fingerprint: dict, process_index: int, process_count: int):
    self._build, self._fingerprint = build, fingerprint
    self._index, self._count = process_index, process_count
    self._it, self._batches = build().as_numpy_iterator(), 0

  def __iter__(self):
    return self

  def __next__(self) -> dict:
    batch = next(self._it)
    self._batches += 1
    return batch

  def get_state(self) -> dict:
    return {"format": STATE_FORMAT, "process_index": self._index, "process_count": self._count,
            "fingerprint": dict(self._fingerprint), "batches": self._batches}

  def set_state(self, state: dict) -> None:
    if state.get("format") != STATE_FORMAT:
      raise ValueError(f"not a tf.data iterator state (format {state.get('format')!r}); was it "
                       "saved by the grain backend? Use the same input_pipeline.backend to resume")
    mine = (self._index, self._count, self._fingerprint)
    saved = (state["process_index"], state["process_count"], state["fingerprint"])
    if saved != mine:
      raise ValueError(f"the tf.data iterator state was saved as (process, count, config)={saved}, "
                       f"this run is {mine}; restore with the same processes and data config")
    self._it = self._build().skip(int(state["batches"])).as_numpy_iterator()
    self._batches = int(state["batches"])


@gin.configurable
def _pad_rows(batch: dict, rows: int) -> dict:
  def pad(x):
    paddings = [[0, rows - tf.shape(x)[0]]] + [[0, 0]] * (len(x.shape) - 1)
    return tf.ensure_shape(tf.pad(x, paddings), [rows] + x.shape[1:])
  return {k: pad(v) for k, v in batch.items()}


def make_seqio_iterator(task: str = gin.REQUIRED, *, seq_len: int = gin.REQUIRED,
                        batch_size: int = gin.REQUIRED, seed: int = 0, split: str = "train",
                        num_channels: int = 1, shuffle: bool = True, num_epochs: Optional[int] = None,
                        long_documents: str = "split", process_index: Optional[int] = None,
                        process_count: Optional[int] = None) -> TfDataBatchIterator:
  """Batches straight from a seqio Task/Mixture (no cache), packed like the grain pipeline.

  batch_size is global; each process reads its seqio.ShardInfo share and yields
  batch_size / process_count rows. `num_epochs=1, shuffle=False` gives a finite eval pass (the
  last partial batch is dropped).
  """
  index = jax.process_index() if process_index is None else process_index
  count = jax.process_count() if process_count is None else process_count
  if batch_size % count:
    raise ValueError(f"global batch_size={batch_size} is not divisible by {count} processes")

  def build():
    provider = seqio.get_mixture_or_task(task)
    ds = provider.get_dataset(sequence_length=None, split=split, shuffle=shuffle, seed=seed,
                              num_epochs=num_epochs, shard_info=seqio.ShardInfo(index, count))
    ds = pack_tf_dataset(ds, seq_len, num_channels, long_documents)
    rows = batch_size // count
    if num_epochs is None:
      return ds.batch(rows, drop_remainder=True).prefetch(2)
    # A finite pass keeps its last partial batch, filled up with all-zero (padding) rows.
    return ds.batch(rows).map(lambda b: _pad_rows(b, rows)).prefetch(2)

  fingerprint = {"task": task, "split": split, "seq_len": seq_len, "batch_size": batch_size,
                 "seed": seed, "shuffle": shuffle, "num_epochs": num_epochs,
                 "long_documents": long_documents}
  return TfDataBatchIterator(build, fingerprint=fingerprint, process_index=index,
                             process_count=count)
