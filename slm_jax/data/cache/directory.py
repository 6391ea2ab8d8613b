"""ArrayRecord cache of template outputs (docs/data_contract.md section 4).

A cache directory holds

    {split}.array_record-00000-of-0000N   records in the `records` (slm1) format, round-robin
    vocab_spec.json                       UnifiedVocab.save of the vocabulary the ids are in
    cache_info.json                       task, split, counts, K, shard names (written last)

Writing is atomic: everything goes to a sibling `.{name}.tmp-<pid>` directory that is renamed onto
the final name only once every shard is closed and cache_info.json is written. A killed writer
leaves a temp directory that `open_cache` refuses (no cache_info.json), never a half cache.
"""
from __future__ import annotations

import dataclasses
import json
import os
import shutil
import time
from typing import Iterable, Optional

import numpy as np

from slm_jax.data.cache import records
from slm_jax.errors import SlmError
from slm_jax.unified_vocab import BOS_ID, EOS_ID, UnifiedVocab

INFO_FILENAME = "cache_info.json"


class IncompleteCacheError(SlmError, FileNotFoundError):
  """The directory is not a complete cache (interrupted write, or the wrong path)."""


class ExampleError(SlmError, ValueError):
  """An example does not follow contract section 3; the message names the example and the field."""


@dataclasses.dataclass(frozen=True)
class CacheInfo:
  """Contents of cache_info.json plus where the cache lives."""
  directory: str
  task: str
  split: str
  num_examples: int
  num_tokens: int
  num_loss_tokens: float
  num_channels: int
  shards: tuple[str, ...]
  shard_counts: tuple[int, ...]
  record_format: str = records.FORMAT_NAME

  @property
  def shard_paths(self) -> list[str]:
    return [os.path.join(self.directory, s) for s in self.shards]

  def to_json(self) -> dict:
    d = dataclasses.asdict(self)
    d.pop("directory")
    d["shards"], d["shard_counts"] = list(self.shards), list(self.shard_counts)
    return d


def validate_example(ex: dict, vocab: UnifiedVocab, index: int = -1) -> None:
  """Checks one template output against contract section 3 and the vocabulary."""
  where = f"example {index}" if index >= 0 else "example"
  tokens = np.asarray(ex["tokens"])
  n = tokens.shape[0] if tokens.ndim == 1 else -1
  if n < 2:
    raise ExampleError(f"{where}: tokens must be int[N] with N >= 2 (BOS ... EOS); got shape {tokens.shape}")
  if tokens[0] != BOS_ID or tokens[-1] != EOS_ID:
    raise ExampleError(f"{where}: tokens must start with BOS={BOS_ID} and end with EOS={EOS_ID} "
                       f"(contract section 3); got {tokens[0]} ... {tokens[-1]}")
  if tokens.min() < 0 or tokens.max() >= vocab.size:
    raise ExampleError(f"{where}: unified id {int(tokens.max()) if tokens.max() >= vocab.size else int(tokens.min())}"
                       f" outside [0, {vocab.size}); the template used another vocabulary")
  if np.shape(ex["loss_mask"]) != (n,):
    raise ExampleError(f"{where}: loss_mask must be float[{n}]; got shape {np.shape(ex['loss_mask'])}")
  extra = vocab.num_channels - 1
  codes = ex.get("speech_codes")
  if extra == 0 and codes is not None and np.size(codes):
    raise ExampleError(f"{where}: speech_codes given but the vocabulary has K=1 channel")
  if extra > 0:
    if codes is None or np.shape(codes) != (n, extra):
      raise ExampleError(f"{where}: speech_codes must be int[{n}, {extra}] for K={extra + 1}; "
                         f"got {None if codes is None else np.shape(codes)}")
    codes = np.asarray(codes)
    sizes = np.asarray(vocab.extra_codebook_sizes)
    if codes.min() < 0 or (codes >= sizes[None, :]).any():
      raise ExampleError(f"{where}: speech_codes outside the codebook sizes {tuple(sizes)}")


def refuse_existing(out_dir: str, overwrite: bool) -> None:
  """FileExistsError if `out_dir` exists and may not be replaced."""
  if os.path.exists(out_dir) and not overwrite:
    raise FileExistsError(f"cache directory {os.path.abspath(out_dir)} already exists; pass "
                          "--overwrite to replace it")


def write_cache(examples: Iterable[dict], out_dir: str, vocab: UnifiedVocab, *, task: str,
                split: str = "train", num_shards: int = 1, overwrite: bool = False,
                total: Optional[int] = None, progress: bool = True) -> CacheInfo:
  """Writes template outputs to an ArrayRecord cache at `out_dir`, atomically.

  Args:
    examples: dicts with tokens int[N], loss_mask float[N], speech_codes int[N, K-1] (K > 1).
    vocab: the unified vocabulary the ids are in; every example is checked against it.
    num_shards: number of ArrayRecord files; example i goes to shard i % num_shards.
    overwrite: replace an existing complete cache (otherwise that is an error).
    total: number of examples, if known, for the progress bar.
  """
  from array_record.python.array_record_module import ArrayRecordWriter  # pylint: disable=import-outside-toplevel
  import tqdm  # pylint: disable=import-outside-toplevel

  out_dir = os.path.abspath(out_dir)
  refuse_existing(out_dir, overwrite)
  if num_shards < 1:
    raise ValueError(f"num_shards must be >= 1, got {num_shards}")
  parent, name = os.path.split(out_dir)
  os.makedirs(parent, exist_ok=True)
  tmp = os.path.join(parent, f".{name}.tmp-{os.getpid()}-{int(time.time())}")
  os.makedirs(tmp)
  shards = [f"{split}.array_record-{i:05d}-of-{num_shards:05d}" for i in range(num_shards)]
  writers = [ArrayRecordWriter(os.path.join(tmp, s), "group_size:1") for s in shards]
  counts = [0] * num_shards
  num_tokens, num_loss = 0, 0.0
  try:
    bar = tqdm.tqdm(examples, total=total, desc=f"cache {task}/{split}", unit="ex", disable=not progress)
    for i, ex in enumerate(bar):
      validate_example(ex, vocab, i)
      writers[i % num_shards].write(records.encode(ex))
      counts[i % num_shards] += 1
      num_tokens += len(ex["tokens"])
      num_loss += float(np.sum(ex["loss_mask"]))
  except Exception:  # a bad example or source: remove the partial write (a kill leaves it, unused)
    for w in writers:
      w.close()
    shutil.rmtree(tmp, ignore_errors=True)
    raise
  finally:
    for w in writers:
      w.close()
  if sum(counts) == 0:
    shutil.rmtree(tmp)
    raise ExampleError(f"task {task!r} split {split!r} produced no examples; nothing cached")
  info = CacheInfo(directory=out_dir, task=task, split=split, num_examples=sum(counts),
                   num_tokens=num_tokens, num_loss_tokens=num_loss, num_channels=vocab.num_channels,
                   shards=tuple(shards), shard_counts=tuple(counts))
  vocab.save(tmp)
  with open(os.path.join(tmp, INFO_FILENAME), "w") as f:
    json.dump(info.to_json(), f, indent=2, sort_keys=True)
  if os.path.exists(out_dir):  # overwrite: move the old cache aside first, then swap
    old = os.path.join(parent, f".{name}.old-{os.getpid()}")
    os.rename(out_dir, old)
    os.rename(tmp, out_dir)
    shutil.rmtree(old)
  else:
    os.rename(tmp, out_dir)
  return info


def open_cache(directory: str, vocab: Optional[UnifiedVocab] = None) -> CacheInfo:
  """Reads cache_info.json; checks completeness and (if given) the vocabulary."""
  directory = os.path.abspath(directory)
  path = os.path.join(directory, INFO_FILENAME)
  if not os.path.exists(path):
    hint = (" (this is the temp directory of an interrupted `slm-data cache`; rerun it)"
            if ".tmp-" in os.path.basename(directory) else "")
    raise IncompleteCacheError(f"{directory} is not a complete slm_jax cache: no {INFO_FILENAME}{hint}. "
                               "Build it with `slm-data cache --task NAME --out DIR`.")
  with open(path) as f:
    d = json.load(f)
  if d.get("record_format") != records.FORMAT_NAME:
    raise records.RecordFormatError(f"{directory}: record format {d.get('record_format')!r}, this "
                                    f"version reads {records.FORMAT_NAME!r}; rebuild the cache")
  info = CacheInfo(directory=directory, task=d["task"], split=d["split"],
                   num_examples=d["num_examples"], num_tokens=d["num_tokens"],
                   num_loss_tokens=d["num_loss_tokens"], num_channels=d["num_channels"],
                   shards=tuple(d["shards"]), shard_counts=tuple(d["shard_counts"]))
  missing = [p for p in info.shard_paths if not os.path.exists(p)]
  if missing:
    raise IncompleteCacheError(f"{directory}: shard files missing: {missing[:3]}; rebuild the cache")
  if vocab is not None:
    vocab.check_against_saved(directory, what=f"cache {directory}")
  return info
