"""One gin switch over the two input backends: `make_input_iterator.backend = "grain" | "seqio"`.

    grain  (default) cached tasks -> grain_pipeline.make_grain_iterator: per-process shards,
           mixing by rates, packing, exact resume from get_state().
    seqio  a seqio Task/Mixture read directly through tf.data -> feature_converter: no cache
           needed, for quick experiments; resume replays and skips.

Both yield the same batch keys and semantics (docs/data_contract.md section 5). Backend-specific
knobs are bound on the backend's own factory (`make_grain_iterator.num_packing_bins = 32`).
"""
from __future__ import annotations

from typing import Optional, Sequence

import gin

from slm_jax.unified_vocab import UnifiedVocab

BACKENDS = ("grain", "seqio")


@gin.configurable
def make_input_iterator(backend: str = "grain", *, seq_len: int = gin.REQUIRED,
                        batch_size: int = gin.REQUIRED, seed: int = 0,
                        vocab: Optional[UnifiedVocab] = None, cache_dirs: Sequence[str] = (),
                        rates: Optional[Sequence[float]] = None, task: Optional[str] = None,
                        evaluation: bool = False, eval_split: str = "validation"):
  """The training (or, with evaluation=True, a finite eval) iterator of the chosen backend.

  Args:
    backend: "grain" (reads `cache_dirs`, mixed by `rates`) or "seqio" (reads `task`).
    seq_len, batch_size, seed: row length L, GLOBAL batch size, data seed.
    vocab: the model's UnifiedVocab; grain checks every cache against it, seqio takes K from it.
  """
  if backend == "grain":
    from slm_jax.data.pipeline import grain_pipeline  # pylint: disable=import-outside-toplevel
    if not cache_dirs:
      raise ValueError("backend='grain' needs cache_dirs (from `slm-data cache`); or use "
                       "backend='seqio' with a task name")
    if evaluation:
      return grain_pipeline.make_grain_eval_iterator(cache_dirs, seq_len=seq_len,
                                                     batch_size=batch_size, vocab=vocab)
    return grain_pipeline.make_grain_iterator(cache_dirs, rates, seq_len=seq_len,
                                              batch_size=batch_size, seed=seed, vocab=vocab)
  if backend == "seqio":
    from slm_jax.data.pipeline import feature_converter  # pylint: disable=import-outside-toplevel
    if not task:
      raise ValueError("backend='seqio' needs task=<registered seqio Task or Mixture name>")
    k = vocab.num_channels if vocab is not None else 1
    if evaluation:
      return feature_converter.make_seqio_iterator(task, seq_len=seq_len, batch_size=batch_size,
                                                   seed=seed, split=eval_split, num_channels=k,
                                                   shuffle=False, num_epochs=1)
    return feature_converter.make_seqio_iterator(task, seq_len=seq_len, batch_size=batch_size,
                                                 seed=seed, num_channels=k)
  raise ValueError(f"input backend {backend!r} is not one of {BACKENDS}")
