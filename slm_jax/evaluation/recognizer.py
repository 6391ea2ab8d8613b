"""Offline speech recognition with pocketsphinx (PyPI `pocketsphinx`, its bundled English model).

The loopback recognizer of the evaluation: synthesized or resynthesized speech is scored by
recognizing it and comparing to the transcript (WER). Weak in absolute terms (its WER on the
demo's flite speech is in BENCHMARKS.md), but offline, deterministic and good enough to compare
conditions (original audio vs a tokenizer's round trip vs a model's TTS) on the same utterances.
"""
from __future__ import annotations

import multiprocessing
import os
from typing import Callable, NamedTuple, Optional, Sequence, Union

import numpy as np

from slm_jax.data import audio as audio_lib
from slm_jax.errors import SlmError

SAMPLE_RATE = 16000  # the bundled en-us acoustic model

# The search's pruning: at most 5,000 active HMMs and 20 distinct word ends per frame (pocketsphinx
# defaults: 30,000 and no limit). Measured on the demo corpus (BENCHMARKS.md, "The recognizer's
# pruned search"): 48 flite test utterances at the same 22.1% WER in three quarters of the time,
# and an undertrained model's babble, where the full search explodes, in about half. Tighter
# limits (3,000 and 10) halve the time on clean speech too but lose words on degraded speech
# (flite resampled to 8 kHz). Every condition of an evaluation (original audio, its resynthesis,
# the model's speech) is recognized with the same search, so their comparison is unchanged.
SEARCH_LIMITS = {"maxhmmpf": 5000, "maxwpf": 20}


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
    self._decoder = Decoder(samprate=SAMPLE_RATE, loglevel="FATAL", **SEARCH_LIMITS)

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


class Synthesized(NamedTuple):
  """Audio made by the process that recognizes it: `make(*args)` -> float audio at sample_rate.

  For audio that costs more to make than to ship its recipe (Griffin-Lim from speech frames, a
  tokenizer's round trip): `recognize` then makes it in its worker processes too. `make` and `args`
  must pickle (a module-level function, a bound method of a picklable tokenizer).
  """
  make: Callable[..., np.ndarray]
  args: tuple
  sample_rate: int


Item = Union[tuple[np.ndarray, int], Synthesized]


class Recognized(NamedTuple):
  text: str
  audio: Optional[np.ndarray]    # the audio a Synthesized item made; None for given audio


def _recognize_one(transcribe: Callable[[np.ndarray, int], str], item: Item) -> Recognized:
  if isinstance(item, Synthesized):
    audio = np.asarray(item.make(*item.args))
    return Recognized(transcribe(audio, item.sample_rate) if audio.size else "", audio)
  audio, rate = item
  return Recognized(transcribe(audio, rate), None)


_WORKER_RECOGNIZER: PocketsphinxRecognizer | None = None


def _start_worker() -> None:
  global _WORKER_RECOGNIZER  # pylint: disable=global-statement
  _WORKER_RECOGNIZER = PocketsphinxRecognizer()


def _recognize_in_worker(item: Item) -> Recognized:
  return _recognize_one(_WORKER_RECOGNIZER.transcribe, item)


def default_workers() -> int:
  """Recognition processes by default: one per CPU core, at most 4."""
  return max(1, min(4, os.cpu_count() or 1))


def recognize(items: Sequence[Item], workers: int = 1,
              transcribe: Optional[Callable[[np.ndarray, int], str]] = None) -> list[Recognized]:
  """Transcripts (and made audio) of `items`, in order: (audio, sample_rate) pairs or Synthesized.

  transcribe: the recognizer to use in this process (None: pocketsphinx). With pocketsphinx and
  workers > 1, items are made and recognized in that many processes (spawned: the caller may hold
  JAX's threads). Each utterance is recognized from a fresh feature state, so the transcripts
  equal a serial run's. Raises RecognizerUnavailableError when pocketsphinx is needed and missing.
  """
  if transcribe is None:
    transcribe = PocketsphinxRecognizer().transcribe   # fails here, clearly, when it is missing
    workers = min(int(workers), len(items))
  else:
    workers = 1
  if workers <= 1:
    return [_recognize_one(transcribe, item) for item in items]
  items = [item if isinstance(item, Synthesized) else (np.asarray(item[0]), int(item[1]))
           for item in items]
  ctx = multiprocessing.get_context("spawn")
  with ctx.Pool(workers, initializer=_start_worker) as pool:
    return pool.map(_recognize_in_worker, items, chunksize=1)


def transcribe_many(items: Sequence[tuple[np.ndarray, int]], workers: int = 1) -> list[str]:
  """Transcripts of (audio, sample_rate) items, in order (`recognize` with pocketsphinx)."""
  return [r.text for r in recognize(items, workers)]
