"""A seqio Task or Mixture as caches: the layout `slm-data cache` writes and the train loop reads.

    ROOT/                 `slm-data cache --task NAME --split S --out ROOT`
      <task>/             one cache directory per component task (directory.py)
      mixture.json        {"mixture": NAME, "split": S, "rates": {task: rate}} (Mixtures only)

A plain Task is cached into ROOT itself (no mixture.json). seqio (and TensorFlow) are imported
only when a task is cached, never when caches are read.
"""
from __future__ import annotations

import functools
import json
import os
from typing import Callable, Mapping, Optional

from slm_jax.atomic_write import atomic_write
from slm_jax.data.cache import directory, side_by_side
from slm_jax.unified_vocab import UnifiedVocab

MIXTURE_FILENAME = "mixture.json"


def _examples(task, split: str):
  ds = task.get_dataset(sequence_length=None, split=split, shuffle=False, num_epochs=1)
  for ex in ds.as_numpy_iterator():
    yield {k: ex[k] for k in ("tokens", "loss_mask", "speech_codes") if k in ex}


def _cache_one(task_name: str, split: str, out: str, vocab: UnifiedVocab, shards: int,
               overwrite: bool, progress: bool) -> directory.CacheInfo:
  import seqio  # pylint: disable=import-outside-toplevel
  task = seqio.get_mixture_or_task(task_name)
  return directory.write_cache(_examples(task, split), out, vocab, task=task_name, split=split,
                               num_shards=shards, overwrite=overwrite, progress=progress)


def cache_task(name: str, out: str, vocab: UnifiedVocab, split: str = "train", shards: int = 1,
               overwrite: bool = False, progress: bool = True) -> list[directory.CacheInfo]:
  """Caches a registered seqio Task (or each Task of a Mixture) and returns the CacheInfo(s)."""
  return cache_splits(name, {split: out}, vocab, shards, overwrite, progress)


def cache_splits(name: str, outs: Mapping[str, str], vocab: UnifiedVocab, shards: int = 1,
                 overwrite: bool = False, progress: bool = True, workers: int = 1,
                 setup: Optional[Callable[[], None]] = None) -> list[directory.CacheInfo]:
  """`cache_task` for each split -> ROOT of `outs`; returns the CacheInfos, split by split.

  Every component cache (one per task and split) is a job of its own; with workers > 1 this
  process and workers - 1 spawned ones write them side by side (side_by_side.py; the spawned
  ones run `setup` first: import the task modules, parse gin). Each cache is written the same way
  whichever process writes it, so the files do not depend on `workers`.
  """
  import seqio  # pylint: disable=import-outside-toplevel
  provider = seqio.get_mixture_or_task(name)
  mixture = isinstance(provider, seqio.Mixture)
  tasks = provider.tasks if mixture else [provider]
  jobs = [(task.name, split, os.path.join(out, task.name) if mixture else out)
          for split, out in outs.items() for task in tasks]
  for _, _, out in jobs:  # before any work
    directory.refuse_existing(out, overwrite)
  infos = side_by_side.run_side_by_side(
      [functools.partial(_cache_one, task_name, split, out, vocab, shards, overwrite, progress)
       for task_name, split, out in jobs], workers, setup)
  if mixture:
    rates = {task.name: float(provider.get_rate(task)) for task in tasks}
    for split, out in outs.items():
      atomic_write(os.path.join(out, MIXTURE_FILENAME),
                   json.dumps({"mixture": name, "split": split, "rates": rates}, indent=2))
  return infos


def cache_dirs_and_rates(split_root: str) -> tuple[list[str], list[float] | None]:
  """Component caches under ROOT and their rates (mixture.json), or ROOT itself as one cache."""
  mixture_file = os.path.join(split_root, MIXTURE_FILENAME)
  if os.path.exists(mixture_file):
    with open(mixture_file) as f:
      mixture = json.load(f)
    rates = mixture["rates"]
    return [os.path.join(split_root, t) for t in rates], [float(r) for r in rates.values()]
  if os.path.isdir(split_root):
    return [split_root], None
  raise FileNotFoundError(
      f"no cached data at {split_root}: run `slm-data cache --task NAME --split SPLIT "
      f"--out {split_root}` first (make demo does this for the demo mixture)")
