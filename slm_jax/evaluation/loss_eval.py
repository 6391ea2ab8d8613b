"""Held-out loss and perplexity per task and per modality, with the training loss's own sums.

Each task's batches go through the train loop's eval step (`train/step.make_eval_step`, i.e.
`models/loss.lm_loss`), the weighted sums add up over batches and `loss.metrics_from_sums`
turns them into means: `loss/ce` (every trained position), `loss/text_ce` and `loss/speech_ce`
(positions whose target is text / speech), with `perplexity`, `text_perplexity` and
`speech_perplexity` = exp of each. An "all" entry sums the tasks.

Sources: the caches `slm-data cache` writes (ROOT/<split>/<task>/, read with the grain eval
iterator, no shuffling), or each task of a registered seqio Task / Mixture (tf.data, one pass).
"""
from __future__ import annotations

import math
import os
from typing import Iterable, Optional

import jax
import numpy as np
from flax import nnx

from slm_jax.models import loss as loss_lib


class LossEvaluator:
  """The eval step of one model, jit-compiled once per batch shape."""

  def __init__(self, model, loss_options: Optional[loss_lib.LossOptions] = None):
    from slm_jax.train import step as step_lib  # pylint: disable=import-outside-toplevel
    self.graphdef, self.params = nnx.split(model)
    fn = step_lib.make_eval_step(self.graphdef, loss_options=loss_options or loss_lib.LossOptions())
    self._step = jax.jit(fn)

  def sums(self, batches: Iterable[dict], max_batches: Optional[int] = None) -> Optional[dict]:
    total, n = None, 0
    for batch in batches:
      if max_batches is not None and n >= max_batches:
        break
      if not np.asarray(batch["loss_weights"]).any():
        continue            # an all-padding batch adds nothing
      s = jax.device_get(self._step(self.params, {k: np.asarray(v) for k, v in batch.items()}))
      total = s if total is None else jax.tree.map(np.add, total, s)
      n += 1
    return total


def metrics(sums: dict) -> dict:
  """Means of the sums plus the perplexities (exp of each cross-entropy)."""
  out = {k: float(v) for k, v in loss_lib.metrics_from_sums(sums).items() if np.ndim(v) == 0}
  for name, key, weight in (("perplexity", "loss/ce", "weight"),
                            ("text_perplexity", "loss/text_ce", "text_weight"),
                            ("speech_perplexity", "loss/speech_ce", "speech_weight")):
    if float(sums[weight]) > 0:
      out[name] = math.exp(min(out[key], 50.0))
  for key, weight in (("loss/text_ce", "text_weight"), ("loss/speech_ce", "speech_weight")):
    if float(sums[weight]) == 0:
      del out[key]          # no target of that modality: no mean (not a loss of 0)
  out["text_tokens"] = float(sums["text_weight"])
  out["speech_tokens"] = float(sums["speech_weight"])
  return out


def _with_total(per_task: dict, task_sums: dict) -> dict:
  if len(task_sums) > 1:
    total = None
    for s in task_sums.values():
      total = s if total is None else jax.tree.map(np.add, total, s)
    per_task["all"] = metrics(total)
  return per_task


def evaluate_cached(model, cache_root: str, *, split: str = "validation", batch_size: int = 8,
                    seq_len: int = 256, max_batches: Optional[int] = None,
                    loss_options: Optional[loss_lib.LossOptions] = None) -> dict:
  """{task: metrics} over the caches of ROOT/<split> (or ROOT itself when it is one split)."""
  from slm_jax.data.cache.tasks import cache_dirs_and_rates  # pylint: disable=import-outside-toplevel
  from slm_jax.data.pipeline import grain_pipeline  # pylint: disable=import-outside-toplevel
  from slm_jax.data.cache import directory  # pylint: disable=import-outside-toplevel
  root = os.path.join(cache_root, split)
  if not os.path.isdir(root):
    root = cache_root
  subdirs = sorted(os.path.join(root, d) for d in os.listdir(root)
                   if os.path.exists(os.path.join(root, d, directory.INFO_FILENAME)))
  has_info = os.path.exists(os.path.join(root, directory.INFO_FILENAME))
  if subdirs and not has_info and not os.path.exists(os.path.join(root, "mixture.json")):
    dirs = subdirs          # a folder of task caches without a mixture.json
  else:
    dirs, _ = cache_dirs_and_rates(root)
  evaluator = LossEvaluator(model, loss_options)
  task_sums, out = {}, {}
  for d in dirs:
    it = grain_pipeline.make_grain_eval_iterator(
        [d], seq_len=seq_len, batch_size=batch_size, vocab=model.cfg.vocab, process_index=0,
        process_count=1)
    s = evaluator.sums(it, max_batches)
    if s is not None:
      name = directory.open_cache(d).task or os.path.basename(os.path.normpath(d))
      task_sums[name], out[name] = s, metrics(s)
  return _with_total(out, task_sums)


def evaluate_seqio(model, task: str, *, split: str = "validation", batch_size: int = 8,
                   seq_len: int = 256, max_batches: Optional[int] = None,
                   loss_options: Optional[loss_lib.LossOptions] = None) -> dict:
  """{task: metrics} over each task of a registered seqio Task or Mixture (import the module
  that registers it first, e.g. `slm_jax.tasks`)."""
  import seqio  # pylint: disable=import-outside-toplevel
  from slm_jax.data.pipeline import seqio_pipeline  # pylint: disable=import-outside-toplevel
  provider = seqio.get_mixture_or_task(task)
  names = [t.name for t in provider.tasks] if isinstance(provider, seqio.Mixture) else [task]
  evaluator = LossEvaluator(model, loss_options)
  task_sums, out = {}, {}
  for name in names:
    it = seqio_pipeline.make_seqio_iterator(
        name, split=split, seq_len=seq_len, batch_size=batch_size, shuffle=False, num_epochs=1,
        num_channels=model.cfg.vocab.num_channels, process_index=0, process_count=1)
    s = evaluator.sums(it, max_batches)
    if s is not None:
      task_sums[name], out[name] = s, metrics(s)
  return _with_total(out, task_sums)
