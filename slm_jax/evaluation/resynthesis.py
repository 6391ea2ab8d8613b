"""Resynthesis WER: how intelligible a speech tokenizer's round trip (encode -> decode) stays.

The ceiling for any TTS loopback evaluation with that tokenizer: a model that predicted the
exact tokens of an utterance would be heard no better than its resynthesis. Reported next to the
WER of the original audio on the same utterances with the same recognizer.
"""
from __future__ import annotations

import dataclasses
from typing import Callable, Iterable, Optional

import numpy as np

from slm_jax.data.speech.base import SpeechTokenizer
from slm_jax.evaluation.wer import WordErrors, word_errors


@dataclasses.dataclass(frozen=True)
class Utterance:
  audio: np.ndarray  # mono [P], int16 or float
  sample_rate: int
  transcript: str


@dataclasses.dataclass(frozen=True)
class ResynthesisReport:
  original: WordErrors
  resynthesized: WordErrors
  num_utterances: int
  seconds_of_audio: float
  original_hypotheses: tuple[str, ...]

  def __str__(self) -> str:
    return (f"{self.num_utterances} utterances ({self.seconds_of_audio:.0f} s): original "
            f"{self.original}; resynthesized {self.resynthesized}")


def round_trip(tokenizer: SpeechTokenizer, audio: np.ndarray, sample_rate: int) -> np.ndarray:
  """decode(encode(audio)) at tokenizer.sample_rate; deduplicated units keep their durations."""
  if getattr(tokenizer, "dedup", False):
    units, run_lengths = tokenizer.encode_with_durations(audio, sample_rate)
    return tokenizer.decode(units, run_lengths)
  return tokenizer.decode(tokenizer.encode(audio, sample_rate))


def resynthesis_wer(tokenizer: SpeechTokenizer, utterances: Iterable[Utterance],
                    transcribe: Callable[[np.ndarray, int], str],
                    original_hypotheses: Optional[list[str]] = None) -> ResynthesisReport:
  """Recognizes each utterance as is and after `tokenizer.decode(tokenizer.encode(audio))`.

  transcribe(audio, sample_rate) -> text, e.g. `PocketsphinxRecognizer().transcribe`.
  original_hypotheses: an earlier report's `original_hypotheses`, to skip recognizing the
  originals again when comparing several tokenizers on the same utterances.
  """
  if not tokenizer.can_decode:
    raise ValueError(f"speech tokenizer {tokenizer.name} cannot decode frames to audio, so it "
                     "has no resynthesis WER")
  utterances = list(utterances)
  if original_hypotheses is not None and len(original_hypotheses) != len(utterances):
    raise ValueError(f"{len(original_hypotheses)} original hypotheses for "
                     f"{len(utterances)} utterances")
  refs = [u.transcript for u in utterances]
  orig = (list(original_hypotheses) if original_hypotheses is not None
          else [transcribe(u.audio, u.sample_rate) for u in utterances])
  resyn = [transcribe(round_trip(tokenizer, u.audio, u.sample_rate), tokenizer.sample_rate)
           for u in utterances]
  seconds = sum(len(u.audio) / u.sample_rate for u in utterances)
  return ResynthesisReport(word_errors(refs, orig), word_errors(refs, resyn), len(utterances),
                           seconds, tuple(orig))
