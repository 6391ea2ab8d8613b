"""Tokenization speed as a multiple of real time per core (bench/data_pipeline.py calls this)."""
from __future__ import annotations

import time

import numpy as np

from slm_jax.data.speech.base import SpeechTokenizer


def synthetic_speechlike(seconds: float, sample_rate: int, seed: int = 0) -> np.ndarray:
  """Voiced-like test audio: gliding harmonics under a syllable envelope, plus noise."""
  rng = np.random.default_rng(seed)
  t = np.arange(int(seconds * sample_rate)) / sample_rate
  f0 = 120 + 30 * np.sin(2 * np.pi * 0.7 * t)
  phase = 2 * np.pi * np.cumsum(f0) / sample_rate
  voiced = sum(np.sin(h * phase) / h for h in range(1, 12))
  env = 0.5 + 0.5 * np.sin(2 * np.pi * 4 * t) ** 2
  x = 0.1 * env * voiced + 0.01 * rng.standard_normal(t.shape)
  return x.astype(np.float32)


def benchmark_realtime_factor(tokenizer: SpeechTokenizer, seconds: float = 60.0,
                              utterance_seconds: float = 5.0, batch_size: int = 16,
                              threads: int = 1, repeats: int = 3, seed: int = 0) -> float:
  """Seconds of audio tokenized per second of wall time, using `threads` BLAS/FFT threads.

  Encodes `seconds` of synthetic audio in utterances of `utterance_seconds`, `batch_size` at a
  time (encode_batch), and returns the best of `repeats` runs: the real-time factor per core
  when threads == 1.
  """
  import threadpoolctl  # pylint: disable=import-outside-toplevel
  n = max(1, int(round(seconds / utterance_seconds)))
  audios = [synthetic_speechlike(utterance_seconds, tokenizer.sample_rate, seed + i)
            for i in range(n)]
  best = np.inf
  with threadpoolctl.threadpool_limits(threads):
    tokenizer.encode_batch(audios[:1], tokenizer.sample_rate)  # warm caches
    for _ in range(repeats):
      start = time.perf_counter()
      for s in range(0, n, batch_size):
        tokenizer.encode_batch(audios[s:s + batch_size], tokenizer.sample_rate)
      best = min(best, time.perf_counter() - start)
  return n * utterance_seconds / best
