"""Synthetic template outputs (contract section 3) for tests and benchmarks without a corpus.

Each example is BOS, a task tag, a text span and a speech span (or the reverse, like ASR / TTS),
EOS; loss on the second span. Lengths follow a log-normal around `mean_len`, which matches the
spread of real utterances (a few words to a long sentence) well enough for throughput numbers.
"""
from __future__ import annotations

from typing import Iterator

import numpy as np

from slm_jax.unified_vocab import BOS_ID, EOS_ID, UnifiedVocab


def synthetic_examples(vocab: UnifiedVocab, num: int, *, mean_len: int = 200, seed: int = 0,
                       max_len: int = 4096) -> Iterator[dict]:
  """Yields `num` random but valid template outputs in `vocab`; id 2 + i marks example i's text."""
  rng = np.random.default_rng(seed)
  k = vocab.num_channels
  tags = [vocab.special_id(t) for t in ("[ASR]", "[TTS]")]
  for _ in range(num):
    n = int(np.clip(rng.lognormal(np.log(mean_len), 0.5), 6, max_len))
    n_text = max(1, n // 5)
    n_speech = max(1, n - n_text - 3)
    text = rng.integers(0, vocab.text_size, n_text) + vocab.text_start
    speech = rng.integers(0, vocab.speech_codebook_sizes[0], n_speech) + vocab.speech_start
    asr = bool(rng.integers(2))
    first, second = (speech, text) if asr else (text, speech)
    tokens = np.concatenate([[BOS_ID, tags[0] if asr else tags[1]], first, second, [EOS_ID]])
    loss_mask = np.zeros(len(tokens), np.float32)
    loss_mask[2 + len(first):] = 1.0
    ex = {"tokens": tokens.astype(np.int32), "loss_mask": loss_mask}
    if k > 1:
      codes = np.zeros((len(tokens), k - 1), np.int32)
      is_speech = tokens >= vocab.speech_start
      sizes = np.asarray(vocab.extra_codebook_sizes)
      codes[is_speech] = rng.integers(0, sizes, (int(is_speech.sum()), k - 1))
      ex["speech_codes"] = codes
    yield ex
