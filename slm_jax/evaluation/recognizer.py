"""Offline speech recognition with pocketsphinx (PyPI `pocketsphinx`, its bundled English model).

The loopback recognizer of the evaluation: synthesized or resynthesized speech is scored by
recognizing it and comparing to the transcript (WER). Weak in absolute terms (its WER on the
demo's flite speech is in BENCHMARKS.md), but offline, deterministic and good enough to compare
conditions (original audio vs a tokenizer's round trip vs a model's TTS) on the same utterances.
"""
from __future__ import annotations

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
