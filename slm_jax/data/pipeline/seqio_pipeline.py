"""The seqio / tf.data path: template outputs -> the batch of contract section 5, without a cache.

Documents come from the numpy code the grain pipeline runs (documents.py: shift by one inside
each example, then the `long_documents` policy), called per example through tf.numpy_function,
so the two paths cannot drift apart; tests/data/test_seqio_pipeline.py checks that both give the
same documents. Rows are then packed greedily with seqio's `trim_and_pack_dataset` (the tf.data
packer of seqio's own feature converters). seqio packs rank-1 non-zero int32 features only, so
the K-1 extra speech channels travel flattened ([n * (K-1)] with length L * (K-1), which packs
exactly when the tokens do) and every feature is encoded non-zero (`_encode_nonzero`), then
decoded after packing.

For quick experiments on a seqio task; training at scale uses the grain pipeline (checkpointable
state, per-process sharding of caches). The iterator's state is the number of batches served:
restoring rebuilds the (seeded, deterministic) dataset and skips that many.
"""
from __future__ import annotations

from typing import Optional

import gin
import numpy as np
import seqio
import tensorflow as tf

from slm_jax.data import batch as batch_lib
from slm_jax.data.pipeline import documents

STATE_FORMAT = "slm_jax.tfdata_iterator/1"
_DTYPES = {"tokens": tf.int32, "targets": tf.int32, "loss_weights": tf.float32,
           "speech_codes": tf.int32, "target_speech_codes": tf.int32}


def _documents(ds: tf.data.Dataset, num_channels: int,
               policy: documents.LongDocumentPolicy) -> tf.data.Dataset:
  """Template outputs -> documents of at most L positions, by documents.py's numpy code."""
  keys = documents.DOC_FEATURES + (documents.CODE_FEATURES if num_channels > 1 else ())
  extra = num_channels - 1

  def pieces_np(tokens, loss_mask, codes):
    ex = {"tokens": tokens, "loss_mask": loss_mask}
    if extra:
      ex["speech_codes"] = codes
    pieces = policy.flat_map(documents.to_document(ex))
    lengths = np.array([documents.doc_length(d) for d in pieces], np.int64)
    out = []
    for k in keys:
      empty = np.zeros((0, extra) if k in documents.CODE_FEATURES else (0,),
                       _DTYPES[k].as_numpy_dtype)
      out.append(np.concatenate([d[k] for d in pieces]).astype(empty.dtype) if pieces else empty)
    return out + [lengths]

  def to_pieces(ex):
    codes = ex["speech_codes"] if extra else tf.zeros([0, 0], tf.int32)
    *values, lengths = tf.numpy_function(
        pieces_np, [ex["tokens"], ex["loss_mask"], codes],
        [_DTYPES[k] for k in keys] + [tf.int64], stateful=False)
    lengths.set_shape([None])
    ragged = {}
    for k, v in zip(keys, values):
      v.set_shape([None, extra] if k in documents.CODE_FEATURES else [None])
      ragged[k] = tf.RaggedTensor.from_row_lengths(v, lengths)
    return tf.data.Dataset.from_tensor_slices(ragged)

  return ds.flat_map(to_pieces)


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
                    long_documents: str = "split", max_pieces: int = 64) -> tf.data.Dataset:
  """Template outputs (tokens, loss_mask, speech_codes?) -> packed rows with the batch keys."""
  extra = num_channels - 1
  policy = documents.LongDocumentPolicy(seq_len, long_documents, max_pieces)
  ds = _documents(ds, num_channels, policy)
  ds = ds.map(_encode_nonzero, num_parallel_calls=tf.data.AUTOTUNE)
  lengths = {"tokens": seq_len, "targets": seq_len, "loss_weights": seq_len}
  if extra:
    lengths.update(speech_codes=seq_len * extra, target_speech_codes=seq_len * extra)
  ds = seqio.utils.trim_and_pack_dataset(ds, lengths, use_custom_ops=False)

  def finalize(row):
    seg = tf.cast(row["tokens_segment_ids"], tf.int32)
    real = seg > 0
    out = {"tokens": row["tokens"], "targets": tf.where(real, row["targets"] - 1, 0),
           "loss_weights": tf.where(real, tf.bitcast(row["loss_weights"] - 1, tf.float32), 0.0),
           "segment_ids": seg, "positions": tf.cast(row["tokens_positions"], tf.int32)}
    for k in ("speech_codes", "target_speech_codes"):
      if extra:
        codes = tf.reshape(row[k], [seq_len, extra]) - 1
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
      raise batch_lib.IteratorStateError(
          f"not a tf.data iterator state (format {state.get('format')!r}); was it saved by the "
          "grain backend? Resume with the same train.data_factory")
    mine = (self._index, self._count, self._fingerprint)
    saved = (state["process_index"], state["process_count"], state["fingerprint"])
    if saved != mine:
      raise batch_lib.IteratorStateError(f"the tf.data iterator state was saved as (process, count, config)={saved}, "
                       f"this run is {mine}; restore with the same processes and data config")
    self._it = self._build().skip(int(state["batches"])).as_numpy_iterator()
    self._batches = int(state["batches"])


def _pad_rows(batch: dict, rows: int) -> dict:
  def pad(x):
    paddings = [[0, rows - tf.shape(x)[0]]] + [[0, 0]] * (len(x.shape) - 1)
    return tf.ensure_shape(tf.pad(x, paddings), [rows] + x.shape[1:])
  return {k: pad(v) for k, v in batch.items()}


@gin.configurable
def make_seqio_iterator(task: str = gin.REQUIRED, *, seq_len: int = gin.REQUIRED,
                        batch_size: int = gin.REQUIRED, seed: int = 0, split: str = "train",
                        num_channels: int = 1, shuffle: bool = True, num_epochs: Optional[int] = None,
                        long_documents: str = "split", max_pieces: int = 64,
                        process_index: Optional[int] = None,
                        process_count: Optional[int] = None) -> TfDataBatchIterator:
  """Batches straight from a seqio Task/Mixture (no cache), packed like the grain pipeline.

  batch_size is global; each process reads its seqio.ShardInfo share and yields
  batch_size / process_count rows. `num_epochs=1, shuffle=False` gives a finite eval pass (its
  last partial batch is filled up with all-padding rows).
  """
  shard = batch_lib.process_rows(batch_size, process_index, process_count)
  index, count, rows = shard.process_index, shard.process_count, shard.num_rows

  def build():
    provider = seqio.get_mixture_or_task(task)
    ds = provider.get_dataset(sequence_length=None, split=split, shuffle=shuffle, seed=seed,
                              num_epochs=num_epochs, shard_info=seqio.ShardInfo(index, count))
    ds = pack_tf_dataset(ds, seq_len, num_channels, long_documents, max_pieces)
    if num_epochs is None:
      return ds.batch(rows, drop_remainder=True).prefetch(2)
    # A finite pass keeps its last partial batch, filled up with all-zero (padding) rows.
    return ds.batch(rows).map(lambda b: _pad_rows(b, rows)).prefetch(2)

  fingerprint = {"task": task, "split": split, "seq_len": seq_len, "batch_size": batch_size,
                 "seed": seed, "shuffle": shuffle, "num_epochs": num_epochs,
                 "long_documents": long_documents}
  return TfDataBatchIterator(build, fingerprint=fingerprint, process_index=index,
                             process_count=count)
