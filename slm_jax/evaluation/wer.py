"""Word error rate over normalized transcripts (jiwer does the alignment).

Both sides are normalized the way the corpus transcripts are (lowercase, punctuation removed,
apostrophes inside words kept), so "Don't panic!" and "don't panic" count as equal.
"""
from __future__ import annotations

import dataclasses
from typing import Sequence

import jiwer

from slm_jax.data.transcript import normalize_transcript


@dataclasses.dataclass(frozen=True)
class WordErrors:
  """Corpus-level word errors: WER = (substitutions + deletions + insertions) / reference words."""
  substitutions: int
  deletions: int
  insertions: int
  reference_words: int

  @property
  def wer(self) -> float:
    return (self.substitutions + self.deletions + self.insertions) / max(self.reference_words, 1)

  def __str__(self) -> str:
    return (f"WER {100 * self.wer:.1f}% (S {self.substitutions}, D {self.deletions}, "
            f"I {self.insertions} / {self.reference_words} words)")


def normalized_pairs(references: Sequence[str], hypotheses: Sequence[str]):
  """Both sides in the corpus's normal form; an empty reference (nothing to score) is an error."""
  if len(references) != len(hypotheses):
    raise ValueError(f"{len(references)} references but {len(hypotheses)} hypotheses")
  refs = [normalize_transcript(r) for r in references]
  hyps = [normalize_transcript(h) for h in hypotheses]
  empty = [i for i, r in enumerate(refs) if not r]
  if empty:
    raise ValueError(f"reference transcripts {empty[:5]} are empty after normalization: "
                     "drop those utterances from the evaluation set")
  return refs, hyps


def word_errors(references: Sequence[str], hypotheses: Sequence[str]) -> WordErrors:
  """Corpus-level word errors of `hypotheses` against `references` (one string per utterance).

  An empty hypothesis counts every reference word as deleted; an empty reference is an error,
  since it has no words to score against.
  """
  refs, hyps = normalized_pairs(references, hypotheses)
  if not refs:
    return WordErrors(0, 0, 0, 0)
  # jiwer refuses empty hypotheses; score those as all-deletions ourselves.
  scored = [i for i, h in enumerate(hyps) if h]
  s = d = i_ = 0
  if scored:
    out = jiwer.process_words([refs[i] for i in scored], [hyps[i] for i in scored])
    s, d, i_ = out.substitutions, out.deletions, out.insertions
  d += sum(len(refs[i].split()) for i in range(len(refs)) if not hyps[i])
  return WordErrors(s, d, i_, sum(len(r.split()) for r in refs))
