"""The grain input pipeline: caches -> per-process shard -> shuffle -> mix -> pack -> batch.

    ArrayRecord shards of each cache (MapDataset.source)
      [process_index::process_count]   each process reads a disjoint stride of every cache
      .map(decode, shift by one)       documents.to_document
      .shuffle(seed_i).repeat(epochs)  a fresh permutation every epoch
      MapDataset.mix(rates)            deterministic interleave of the caches
      FlatMap(long-document policy)    documents.LongDocumentPolicy
      First/BestFitPack(L)             grain's packers: segment ids / positions per row
      .batch(global_batch / processes)
  -> BatchIterator: __next__() -> dict of numpy arrays (contract section 5),
                    get_state() -> JSON dict, set_state(dict)

Iterator states are per process. A state records the process index and count it was taken with
and a fingerprint of the data configuration; `set_state` refuses a state from another process
index or another data configuration. When the *number* of processes changed between save and
restore, the per-process states describe shards that no longer exist, so
`on_process_count_change` decides:

  "error"   (default) ProcessCountChangedError naming both counts and the fix;
  "restart" start every process on a fresh permutation (seed folded with the number of batches
            the saved run had consumed), so training continues without replaying the start of the
            epoch; examples of the interrupted epoch may be seen again or skipped. Logged.
"""
from __future__ import annotations

import copy
import functools
import logging
from typing import Optional, Sequence

import gin
import grain
import grain.experimental as gex
import numpy as np

from slm_jax.data import batch as batch_lib
from slm_jax.data import cache as cache_lib
from slm_jax.data.cache import records
from slm_jax.data.pipeline import documents
from slm_jax.data.pipeline import speech_masking as speech_masking_lib
from slm_jax.data.pipeline.speech_masking import SpeechMasking
from slm_jax.data.batch import IteratorStateError
from slm_jax.unified_vocab import UnifiedVocab

STATE_FORMAT = "slm_jax.grain_iterator/1"
PACKERS = {"first_fit": gex.FirstFitPackIterDataset, "best_fit": gex.BestFitPackIterDataset}


class ProcessCountChangedError(IteratorStateError):
  """An iterator state saved with another number of processes (see module docstring)."""


def _decode_document(record: bytes) -> dict:
  return documents.to_document(records.decode(record))


def _fold_seed(seed: int, *salt: int) -> int:
  return int(np.random.SeedSequence([seed % 2**32, *salt]).generate_state(1)[0])


def open_caches(cache_dirs: Sequence[str], vocab: Optional[UnifiedVocab]) -> tuple[list, UnifiedVocab]:
  """Opens every cache and checks its vocabulary against `vocab` (or against the first cache's)."""
  if isinstance(cache_dirs, str):
    cache_dirs = [cache_dirs]
  if not cache_dirs:
    raise ValueError("no cache_dirs given; build caches with `slm-data cache --task NAME --out DIR`")
  if vocab is None:
    vocab = UnifiedVocab.load(cache_dirs[0])
  return [cache_lib.open_cache(d, vocab) for d in cache_dirs], vocab


def _length_struct(seq_len: int, num_channels: int) -> dict:
  keys = documents.DOC_FEATURES + (documents.CODE_FEATURES if num_channels > 1 else ())
  return {k: seq_len for k in keys}


class BatchIterator:
  """Local batches (dict of numpy arrays) with a JSON-serializable, per-process state."""

  def __init__(self, build, *, fingerprint: dict, process_index: int, process_count: int,
               policy: documents.LongDocumentPolicy, on_process_count_change: str = "error"):
    if on_process_count_change not in ("error", "restart"):
      raise ValueError(f"on_process_count_change={on_process_count_change!r}; use 'error' or 'restart'")
    self._build, self._fingerprint = build, fingerprint
    self._index, self._count = process_index, process_count
    self._policy, self._on_change = policy, on_process_count_change
    self._restart, self._salt = 0, 0
    self._it = iter(build(0))
    self._batches = 0

  def __iter__(self):
    return self

  def __next__(self) -> dict:
    batch = next(self._it)
    self._batches += 1
    return batch

  def stats(self) -> dict:
    """Counters for logging: batches served and the long-document policy's counts."""
    return {"batches": self._batches, **self._policy.stats()}

  def get_state(self) -> dict:
    return {"format": STATE_FORMAT, "process_index": self._index, "process_count": self._count,
            "fingerprint": copy.deepcopy(self._fingerprint), "batches": self._batches,
            "restart": self._restart, "salt": self._salt, "grain": self._it.get_state()}

  def set_state(self, state: dict) -> None:
    if not isinstance(state, dict) or state.get("format") != STATE_FORMAT:
      raise IteratorStateError(f"not a grain iterator state (format {state.get('format') if isinstance(state, dict) else type(state)}, "
                               f"expected {STATE_FORMAT!r}); was it saved by another input backend?")
    if state["process_count"] != self._count:
      msg = (f"the data iterator state was saved with {state['process_count']} processes, this run "
             f"has {self._count}; per-process states cannot be re-split.")
      if self._on_change == "error":
        raise ProcessCountChangedError(
            msg + " Restore with the same number of processes, or set "
            "on_process_count_change='restart' to continue on a fresh permutation (examples of the "
            "interrupted epoch may repeat or be skipped).")
      logging.warning("%s Restarting the data on a fresh permutation.", msg)
      self._restart = int(state.get("restart", 0)) + 1
      self._salt = _fold_seed(int(state["batches"]), self._restart)
      self._it = iter(self._build(self._salt))
      self._batches = int(state["batches"])
      return
    if state["process_index"] != self._index:
      raise IteratorStateError(f"this is process {self._index}, the state belongs to process "
                               f"{state['process_index']}; save and restore one state per process")
    if state["fingerprint"] != self._fingerprint:
      diffs = {k: (state["fingerprint"].get(k), v) for k, v in self._fingerprint.items()
               if state["fingerprint"].get(k) != v}
      raise IteratorStateError(f"the data configuration changed since the state was saved "
                               f"(field: (saved, now)): {diffs}; restore the old configuration or "
                               "start the data from scratch")
    self._restart = int(state.get("restart", 0))
    if int(state.get("salt", 0)) != self._salt:
      self._salt = int(state["salt"])
      self._it = iter(self._build(self._salt))
    self._it.set_state(state["grain"])
    self._batches = int(state["batches"])


@gin.configurable
def make_grain_iterator(cache_dirs: Sequence[str] = gin.REQUIRED, rates: Optional[Sequence[float]] = None,
                        *, seq_len: int = gin.REQUIRED, batch_size: int = gin.REQUIRED,
                        seed: int = 0, vocab: Optional[UnifiedVocab] = None,
                        num_epochs: Optional[int] = None, packing: str = "first_fit",
                        num_packing_bins: int = 16, shuffle_bins: bool = True,
                        long_documents: str = "split", max_pieces: int = 64, prefetch: int = 0,
                        process_index: Optional[int] = None, process_count: Optional[int] = None,
                        on_process_count_change: str = "error",
                        speech_masking: Optional[SpeechMasking] = None) -> BatchIterator:
  """Training iterator over cached tasks: shuffled, mixed, packed, batched per process.

  Args:
    cache_dirs: cache directories (`slm-data cache`), one per task.
    rates: mixing weights, one per cache (normalized; default: proportional to example counts).
    seq_len: L, positions per packed row (after the shift by one).
    batch_size: GLOBAL batch; each process yields batch_size / process_count rows.
    seed: shuffling / mixing / bin-shuffling seed; same seed, same data.
    vocab: the model's UnifiedVocab; every cache's vocab_spec.json must match it.
    num_epochs: passes over each cache (None: forever).
    packing: "first_fit" or "best_fit" (grain's packers) over `num_packing_bins` rows at a time.
    long_documents: "split" | "drop" | "truncate" for documents longer than L (documents.py).
    prefetch: >0 prefetches that many batches in a background thread.
    process_index, process_count: default jax.process_index() / jax.process_count().
    on_process_count_change: "error" | "restart" (module docstring).
    speech_masking: SpecAugment-style masks on the speech rows only read (speech_masking.py);
      None: rows as cached.
  """
  shard = batch_lib.process_rows(batch_size, process_index, process_count)
  index, count, local_batch = shard.process_index, shard.process_count, shard.num_rows
  if packing not in PACKERS:
    raise ValueError(f"packing={packing!r}; choose one of {sorted(PACKERS)}")
  infos, vocab = open_caches(cache_dirs, vocab)
  if rates is None:
    rates = [i.num_examples for i in infos]
  if len(rates) != len(infos) or min(rates) < 0 or sum(rates) <= 0:
    raise ValueError(f"rates={list(rates)} must give one non-negative weight per cache ({len(infos)})")
  policy = documents.LongDocumentPolicy(seq_len, long_documents, max_pieces)
  if speech_masking is not None:
    speech_masking.check_channels(vocab.num_channels, vocab.speech_codebook_sizes[0])

  def build(restart_salt: int):
    parts = []
    for i, info in enumerate(infos):
      ds = grain.MapDataset.source(grain.sources.ArrayRecordDataSource(info.shard_paths))
      ds = ds[index::count]
      if len(ds) == 0:
        raise ValueError(f"cache {info.directory} has {info.num_examples} examples, fewer than "
                         f"{count} processes: process {index} would get none")
      ds = ds.map(_decode_document).shuffle(seed=_fold_seed(seed, i, restart_salt)).repeat(num_epochs)
      parts.append(ds)
    ds = parts[0] if len(parts) == 1 else grain.MapDataset.mix(parts, [float(r) for r in rates])
    it = gex.FlatMapIterDataset(ds.to_iter_dataset(), policy)
    it = PACKERS[packing](it, length_struct=_length_struct(seq_len, vocab.num_channels),
                          num_packing_bins=num_packing_bins, seed=_fold_seed(seed, 7, restart_salt),
                          shuffle_bins=shuffle_bins)
    it = it.map(documents.finalize_row)
    if speech_masking is not None:
      it = it.random_map(functools.partial(_mask, masking=speech_masking, speech_start=vocab.speech_start),
                         seed=_fold_seed(seed, 11, restart_salt))
    it = it.batch(local_batch, drop_remainder=True)
    if prefetch:
      it = gex.ThreadPrefetchIterDataset(it, prefetch_buffer_size=prefetch)
    return it

  fingerprint = {"caches": [f"{i.task}/{i.split}:{i.num_examples}" for i in infos],
                 "rates": [float(r) for r in rates], "seq_len": seq_len, "batch_size": batch_size,
                 "seed": seed, "num_epochs": num_epochs, "packing": packing,
                 "num_packing_bins": num_packing_bins, "long_documents": long_documents}
  if speech_masking is not None:
    fingerprint["speech_masking"] = speech_masking.fingerprint()
  return BatchIterator(build, fingerprint=fingerprint, process_index=index, process_count=count,
                       policy=policy, on_process_count_change=on_process_count_change)


def _mask(row: dict, rng: np.random.Generator, *, masking: SpeechMasking, speech_start: int) -> dict:
  return speech_masking_lib.mask_row(row, rng, masking, speech_start)


def _pad_batch(rows: list[dict], batch: int) -> dict:
  out = {k: np.stack([r[k] for r in rows]) for k in rows[0]}
  missing = batch - len(rows)
  if missing:
    out = {k: np.concatenate([v, np.zeros((missing,) + v.shape[1:], v.dtype)]) for k, v in out.items()}
  return out


@gin.configurable
def make_grain_eval_iterator(cache_dirs: Sequence[str] = gin.REQUIRED, *, seq_len: int = gin.REQUIRED,
                             batch_size: int = gin.REQUIRED, vocab: Optional[UnifiedVocab] = None,
                             packing: str = "first_fit", num_packing_bins: int = 16,
                             long_documents: str = "split", max_pieces: int = 64,
                             process_index: Optional[int] = None,
                             process_count: Optional[int] = None) -> BatchIterator:
  """Finite, deterministic evaluation iterator: one pass over the caches in order, no shuffling.

  The last batch is filled with all-padding rows (segment_ids 0, loss_weights 0), so every batch
  has the static shape [batch_size / process_count, L] and padding adds nothing to the loss.
  Call the factory again for each evaluation. Processes may yield different numbers of batches
  (their shards differ by at most one example per cache).
  """
  shard = batch_lib.process_rows(batch_size, process_index, process_count)
  index, count, local_batch = shard.process_index, shard.process_count, shard.num_rows
  infos, vocab = open_caches(cache_dirs, vocab)
  policy = documents.LongDocumentPolicy(seq_len, long_documents, max_pieces)

  def build(_):
    parts = [grain.MapDataset.source(grain.sources.ArrayRecordDataSource(i.shard_paths))[index::count]
             for i in infos]
    ds = parts[0] if len(parts) == 1 else grain.MapDataset.concatenate(parts)
    it = gex.FlatMapIterDataset(ds.map(_decode_document).to_iter_dataset(), policy)
    it = PACKERS[packing](it, length_struct=_length_struct(seq_len, vocab.num_channels),
                          num_packing_bins=num_packing_bins, shuffle_bins=False)
    return it.map(documents.finalize_row).batch(
        local_batch, drop_remainder=False, batch_fn=lambda rows: _pad_batch(list(rows), local_batch))

  fingerprint = {"caches": [f"{i.task}/{i.split}:{i.num_examples}" for i in infos], "eval": True,
                 "seq_len": seq_len, "batch_size": batch_size, "packing": packing,
                 "num_packing_bins": num_packing_bins, "long_documents": long_documents}
  return BatchIterator(build, fingerprint=fingerprint, process_index=index, process_count=count,
                       policy=policy)
