"""Offline speech recognition with pocketsphinx (PyPI `pocketsphinx`, its bundled English model).

The loopback recognizer of the evaluation: synthesized or resynthesized speech is scored by
recognizing it and comparing to the transcript (WER). Weak in absolute terms (its WER on the
demo's flite speech is in BENCHMARKS.md), but offline, deterministic and good enough to compare
conditions (original audio vs a tokenizer's round trip vs a model's TTS) on the same utterances.
"""
from __future__ import annotations

import multiprocessing
import os
from typing import Sequence

import numpy as np

from slm_jax.data import audio as audio_lib
from slm_jax.errors import SlmError

SAMPLE_RATE = 16000  # the bundled en-us acoustic model


class RecognizerUnavailableError(SlmError, RuntimeError):
  """pocketsphinx (the `asr` extra) is not installed."""


class PocketsphinxRecognizer:
  """Recognizes float or int16 mono audio at any rate; returns a lowercase transcript.

  Each call is independent of the calls before it (deterministic per utterance).
  """

  def __init__(self):
    try:
      from pocketsphinx import Decoder  # pylint: disable=import-outside-toplevel
    except ImportError as e:
      raise RecognizerUnavailableError(
          "pocketsphinx is not installed: `pip install -e '.[asr]'` (make test / make demo "
          "install it)") from e
    self._decoder = Decoder(samprate=SAMPLE_RATE, loglevel="FATAL")

  def transcribe(self, audio: np.ndarray, sample_rate: int) -> str:
    mono = audio_lib.to_mono(np.asarray(audio))
    if mono.size == 0:
      return ""
    pcm = audio_lib.to_int16(audio_lib.resample(audio_lib.to_float32(mono), sample_rate,
                                                SAMPLE_RATE))
    # Fresh feature state (cepstral mean etc.) for every utterance: otherwise each result depends
    # on what was recognized before it, and conditions compared on the same utterances differ
    # by the order they were decoded in (measured: 3 of 40 transcripts changed with the order).
    self._decoder.reinit_feat()
    self._decoder.start_utt()
    self._decoder.process_raw(pcm.tobytes(), full_utt=True)
    self._decoder.end_utt()
    hyp = self._decoder.hyp()
    return hyp.hypstr.lower() if hyp is not None else ""


_WORKER_RECOGNIZER: PocketsphinxRecognizer | None = None


def _start_worker() -> None:
  global _WORKER_RECOGNIZER  # pylint: disable=global-statement
  _WORKER_RECOGNIZER = PocketsphinxRecognizer()


def _transcribe_in_worker(audio: np.ndarray, sample_rate: int) -> str:
  return _WORKER_RECOGNIZER.transcribe(audio, sample_rate)


def default_workers() -> int:
  """Recognition processes by default: one per CPU core, at most 4."""
  return max(1, min(4, os.cpu_count() or 1))


def transcribe_many(items: Sequence[tuple[np.ndarray, int]], workers: int = 1) -> list[str]:
  """Transcripts of (audio, sample_rate) items, in order.

  workers > 1 recognizes in that many processes (spawned: the caller may hold JAX's threads). Each
  utterance is recognized from a fresh feature state, so the transcripts equal a serial run's.
  Raises RecognizerUnavailableError when pocketsphinx is missing.
  """
  recognizer = PocketsphinxRecognizer()     # fails here, clearly, when pocketsphinx is missing
  workers = min(int(workers), len(items))
  if workers <= 1:
    return [recognizer.transcribe(a, rate) for a, rate in items]
  ctx = multiprocessing.get_context("spawn")
  with ctx.Pool(workers, initializer=_start_worker) as pool:
    return pool.starmap(_transcribe_in_worker, [(np.asarray(a), int(r)) for a, r in items],
                        chunksize=1)
