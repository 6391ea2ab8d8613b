"""Word and character error rates over normalized transcripts, corpus-level (jiwer aligns).

Both sides are put in the corpus's normal form first (`normalize_transcript`: lowercase,
punctuation removed, apostrophes inside words kept, single spaces). CER counts characters of
that form, spaces included, so a missing word costs its letters and one space.

    rates = error_rates(references, hypotheses)
    rates.wer, rates.cer, rates.to_dict()

An empty hypothesis counts every reference word (and character) as deleted: the trivial
"say nothing" system has WER = CER = 1.0, the floor any model must beat.
"""
from __future__ import annotations

import dataclasses
from typing import Sequence

import jiwer

from slm_jax.evaluation.wer import WordErrors, normalized_pairs, word_errors


@dataclasses.dataclass(frozen=True)
class CharErrors:
  """Corpus-level character errors: CER = (S + D + I) / reference characters."""
  substitutions: int
  deletions: int
  insertions: int
  reference_chars: int

  @property
  def cer(self) -> float:
    return (self.substitutions + self.deletions + self.insertions) / max(self.reference_chars, 1)

  def __str__(self) -> str:
    return (f"CER {100 * self.cer:.1f}% (S {self.substitutions}, D {self.deletions}, "
            f"I {self.insertions} / {self.reference_chars} chars)")


def char_errors(references: Sequence[str], hypotheses: Sequence[str]) -> CharErrors:
  """Corpus-level character errors of normalized `hypotheses` against normalized `references`.

  Same rules as `word_errors`: an empty hypothesis deletes every reference character; an empty
  reference is an error.
  """
  refs, hyps = normalized_pairs(references, hypotheses)
  scored = [i for i, h in enumerate(hyps) if h]
  s = d = ins = 0
  if scored:
    out = jiwer.process_characters([refs[i] for i in scored], [hyps[i] for i in scored])
    s, d, ins = out.substitutions, out.deletions, out.insertions
  d += sum(len(refs[i]) for i in range(len(refs)) if not hyps[i])
  return CharErrors(s, d, ins, sum(len(r) for r in refs))


@dataclasses.dataclass(frozen=True)
class ErrorRates:
  """Word and character errors of one set of hypotheses."""
  words: WordErrors
  chars: CharErrors

  @property
  def wer(self) -> float:
    return self.words.wer

  @property
  def cer(self) -> float:
    return self.chars.cer

  def to_dict(self) -> dict:
    return {"wer": self.wer, "cer": self.cer, "words": dataclasses.asdict(self.words),
            "chars": dataclasses.asdict(self.chars)}

  def __str__(self) -> str:
    return f"{self.words}; {self.chars}"


def error_rates(references: Sequence[str], hypotheses: Sequence[str]) -> ErrorRates:
  """WER and CER of `hypotheses` (one string per utterance) against `references`."""
  return ErrorRates(word_errors(references, hypotheses), char_errors(references, hypotheses))
