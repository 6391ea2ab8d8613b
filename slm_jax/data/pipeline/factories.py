"""The data factories `slm-train` binds for real data (data/batch.py's DataIterator interface).

The gin switch between the two input paths is which factory the run binds:

    train.data_factory = @cached_task_data          # grain over `slm-data cache` output (default)
    cached_task_data.cache_root = '/data/caches/demo_spiritlm_thirds'

    train.data_factory = @seqio_task_data           # seqio / tf.data straight from the task
    seqio_task_data.task = 'demo_spiritlm_thirds'

Both yield the batch dict of docs/data_contract.md with the same packing semantics; grain resumes
exactly from its saved state, the seqio path by replaying and skipping batches.

`cache_root` is what `slm-data cache --task MIXTURE --split S --out ROOT/S` wrote: one cache per
component task (ROOT/<split>/<task>/) and ROOT/<split>/mixture.json with the rates. The train
split is read through the shuffled, mixed, packed grain iterator; evaluation through the finite
eval iterator, padded with all-zero-weight batches once the held-out data is exhausted (so every
process takes the same number of eval steps and the padding never changes the sums).
"""
from __future__ import annotations

import os

import gin
import numpy as np

from slm_jax.data import batch as batch_lib
from slm_jax.data.cache.tasks import cache_dirs_and_rates
from slm_jax.data.pipeline import grain_pipeline
from slm_jax.unified_vocab import UnifiedVocab


class _PadAfterEnd:
  """Wraps a finite iterator: after its end, yields batches of padding (zero loss weight)."""

  def __init__(self, iterator):
    self._it, self._template = iterator, None

  def __iter__(self):
    return self

  def __next__(self):
    try:
      batch = next(self._it)
      self._template = batch
      return batch
    except StopIteration:
      if self._template is None:
        raise ValueError("the evaluation split yields no data: check the task's split, or rebuild "
                         "its cache with `slm-data cache`") from None
      return {k: np.zeros_like(v) for k, v in self._template.items()}

  def get_state(self):
    return self._it.get_state()

  def set_state(self, state):
    self._it.set_state(state)


def _check_row_layout(batch_size: int, shard: batch_lib.HostShard) -> None:
  """The mesh must want from each process the rows the input pipelines give it."""
  expected = batch_lib.process_rows(batch_size, shard.process_index, shard.process_count)
  if shard != expected:
    raise batch_lib.BatchLayoutError(
        f"process {shard.process_index} feeds rows [{shard.first_row}, "
        f"{shard.first_row + shard.num_rows}) of the global batch, but the input pipelines give "
        f"process i rows [i * {expected.num_rows}, (i + 1) * {expected.num_rows}); order the "
        "mesh's batch axes so that each host owns its block of rows in process order")


@gin.configurable
def cached_task_data(*, split: str, batch_size: int, seq_len: int, vocab: UnifiedVocab, shard,
                     seed: int, cache_root: str = gin.REQUIRED, train_split: str = "train",
                     eval_split: str = "validation"):
  """DataIterator over cached seqio tasks for the train loop (see module docstring)."""
  _check_row_layout(batch_size, shard)
  common = dict(seq_len=seq_len, batch_size=batch_size, vocab=vocab,
                process_index=shard.process_index, process_count=shard.process_count)
  if split == "train":
    dirs, rates = cache_dirs_and_rates(os.path.join(cache_root, train_split))
    return grain_pipeline.make_grain_iterator(dirs, rates, seed=seed, **common)
  dirs, _ = cache_dirs_and_rates(os.path.join(cache_root, eval_split))
  return _PadAfterEnd(grain_pipeline.make_grain_eval_iterator(dirs, **common))


@gin.configurable
def seqio_task_data(*, split: str, batch_size: int, seq_len: int, vocab: UnifiedVocab, shard,
                    seed: int, task: str = gin.REQUIRED, train_split: str = "train",
                    eval_split: str = "validation"):
  """DataIterator read straight from a registered seqio Task/Mixture through tf.data (no cache).

  Import the module that registers `task` in gin (`import slm_jax.tasks`); every process reads
  its seqio.ShardInfo share of the files.
  """
  from slm_jax.data.pipeline import seqio_pipeline  # pylint: disable=import-outside-toplevel
  _check_row_layout(batch_size, shard)
  common = dict(seq_len=seq_len, batch_size=batch_size, seed=seed, num_channels=vocab.num_channels,
                process_index=shard.process_index, process_count=shard.process_count)
  if split == "train":
    return seqio_pipeline.make_seqio_iterator(task, split=train_split, **common)
  return _PadAfterEnd(seqio_pipeline.make_seqio_iterator(
      task, split=eval_split, shuffle=False, num_epochs=1, **common))
