"""seqio output features of every speech-text task (docs/data_contract.md section 3).

The vocabulary of `tokens` is a pass-through over unified ids whose size is read lazily from
the gin-configured UnifiedVocab, so registering tasks does not fix the vocabulary at import time.
`task.output_features["tokens"].vocabulary.unified` is the UnifiedVocab the ids are laid out for.
"""
from __future__ import annotations

from typing import Callable

import seqio
import tensorflow as tf

from slm_jax.unified_vocab import EOS_ID, UnifiedVocab


class UnifiedIdVocabulary(seqio.PassThroughVocabulary):
  """seqio vocabulary over unified ids (already tokenized by the templates)."""

  def __init__(self, unified_fn: Callable[[], UnifiedVocab]):
    self._unified_fn = unified_fn
    super().__init__(size=0, eos_id=EOS_ID)

  @property
  def unified(self) -> UnifiedVocab:
    return self._unified_fn()

  @property
  def _base_vocab_size(self) -> int:
    return self.unified.size

  @property
  def size(self) -> int:
    return self.unified.size


def output_features(unified_fn: Callable[[], UnifiedVocab]) -> dict[str, seqio.Feature]:
  """tokens int32[N], loss_mask float32[N], speech_codes int32[N, K-1] (only when K > 1)."""
  ids = UnifiedIdVocabulary(unified_fn)
  return {
      "tokens": seqio.Feature(ids, add_eos=False, dtype=tf.int32),
      "loss_mask": seqio.Feature(seqio.PassThroughVocabulary(2), add_eos=False, dtype=tf.float32),
      "speech_codes": seqio.Feature(ids, add_eos=False, dtype=tf.int32, rank=2, required=False),
  }
