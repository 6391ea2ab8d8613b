"""A seqio Task or Mixture as caches: the layout `slm-data cache` writes and the train loop reads.

    ROOT/                 `slm-data cache --task NAME --split S --out ROOT`
      <task>/             one cache directory per component task (directory.py)
      mixture.json        {"mixture": NAME, "split": S, "rates": {task: rate}} (Mixtures only)

A plain Task is cached into ROOT itself (no mixture.json). seqio (and TensorFlow) are imported
only when a task is cached, never when caches are read.
"""
from __future__ import annotations

import json
import os

from slm_jax.atomic_write import atomic_write
from slm_jax.data.cache import directory
from slm_jax.unified_vocab import UnifiedVocab

MIXTURE_FILENAME = "mixture.json"


def _examples(task, split: str):
  ds = task.get_dataset(sequence_length=None, split=split, shuffle=False, num_epochs=1)
  for ex in ds.as_numpy_iterator():
    yield {k: ex[k] for k in ("tokens", "loss_mask", "speech_codes") if k in ex}


def cache_task(name: str, out: str, vocab: UnifiedVocab, split: str = "train", shards: int = 1,
               overwrite: bool = False, progress: bool = True) -> list[directory.CacheInfo]:
  """Caches a registered seqio Task (or each Task of a Mixture) and returns the CacheInfo(s)."""
  import seqio  # pylint: disable=import-outside-toplevel
  provider = seqio.get_mixture_or_task(name)
  if isinstance(provider, seqio.Mixture):
    infos, rates = [], {}
    for task in provider.tasks:
      infos.append(directory.write_cache(
          _examples(task, split), os.path.join(out, task.name), vocab, task=task.name,
          split=split, num_shards=shards, overwrite=overwrite, progress=progress))
      rates[task.name] = float(provider.get_rate(task))
    atomic_write(os.path.join(out, MIXTURE_FILENAME),
                 json.dumps({"mixture": name, "split": split, "rates": rates}, indent=2))
    return infos
  return [directory.write_cache(_examples(provider, split), out, vocab, task=name, split=split,
                                num_shards=shards, overwrite=overwrite, progress=progress)]


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
