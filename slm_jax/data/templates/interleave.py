"""Interleaved speech-text templates: span interleaving and word-aligned (Spirit LM) interleaving.

Both walk the words of an utterance, split them into spans, and write each span either as text
(its word ids) or as speech (its frames), with an optional marker ([TEXT] / [SPEECH]) before each
span. Adjacent spans of the same modality merge (one marker). Everything is trained (content,
markers, EOS): the model learns both modalities and when to switch.

Both need `word_frame_spans` (word timings). Frame deduplication (k-means unit dedup) breaks
the word <-> frame alignment and is refused by the tokenization preprocessor for these templates.

SpanInterleave ("Scaling Speech-Text Pre-training with Synthetic Interleaved Data", Zeng et al.
2024): span lengths ~ max(1, Poisson(mean_span_words)); each span is speech with probability
`speech_fraction` (eta), independently, so the expected fraction of speech words is exactly eta.
A speech span [i, j) is replaced by the frames of exactly those words:
frames[word_start(i) : word_end(j-1)] (silence before/after the span is dropped).

WordAlignedInterleave (Spirit LM, Nguyen et al. 2024): modalities strictly alternate; the
modality switches at a word boundary with probability `switch_prob` (geometric span lengths,
at least `min_span_words`), the first span's modality is uniform. Speech is cut at boundary
points between words (`Utterance.boundary_tiles`: the middle of the pause between word w-1's end
and word w's start), so the speech spans tile the audio contiguously, as when cutting a recording
by word timings.
The paper describes word-level switching on aligned data without fixing a span distribution we
can reproduce exactly; `switch_prob` is our knob for it.
"""
from __future__ import annotations

import dataclasses

import gin
import numpy as np

from slm_jax.data.templates.base import Template
from slm_jax.data.templates.basic import append_words_text
from slm_jax.data.templates.sequence import SequenceBuilder
from slm_jax.data.templates.utterance import Utterance
from slm_jax.unified_vocab import UnifiedVocab

TEXT, SPEECH = 0, 1


def merge_spans(spans: list[tuple[int, int, int]]) -> list[tuple[int, int, int]]:
  """Merges adjacent (start, end, modality) spans of the same modality."""
  out: list[tuple[int, int, int]] = []
  for s, e, m in spans:
    if out and out[-1][2] == m:
      out[-1] = (out[-1][0], e, m)
    else:
      out.append((s, e, m))
  return out


class _Interleave(Template):
  """Shared build: markers + per-span content; subclasses define plan() and speech bounds."""
  needs_text = True
  needs_speech = True
  needs_alignment = True
  truncation = "stream"

  def speech_bounds(self, utt: Utterance) -> tuple[np.ndarray, np.ndarray]:
    """(starts[W], ends[W]) frames of each word as used in speech spans."""
    raise NotImplementedError

  def build(self, utt, plan, vocab: UnifiedVocab) -> SequenceBuilder:
    seq = SequenceBuilder(vocab).special(self.task_tag)
    starts, ends = self.speech_bounds(utt)
    for s, e, m in plan:
      marker = self.speech_marker if m == SPEECH else self.text_marker
      seq.special(marker, trained=self.train_markers)
      if m == TEXT:
        append_words_text(seq, utt, s, e, trained=True)
      else:
        # Frames [starts[s], ends[e-1]) as per-word tiles: word w gets [starts[w], starts[w+1]).
        for w in range(s, e):
          hi = starts[w + 1] if w + 1 < e else ends[e - 1]
          seq.speech(utt.speech_frames[starts[w]:hi], trained=True, cut_after=True)
    return seq


@gin.configurable
@dataclasses.dataclass(frozen=True)
class SpanInterleave(_Interleave):
  """Zeng et al. 2024 span interleaving (see module docstring)."""
  mean_span_words: float = 10.0
  speech_fraction: float = 0.5
  task_tag: str = "[INTERLEAVE]"
  text_marker: str = "[TEXT]"
  speech_marker: str = "[SPEECH]"
  train_markers: bool = True
  name = "interleaved_span"

  def __post_init__(self):
    if self.mean_span_words <= 0:
      raise ValueError(f"mean_span_words (Poisson lambda) must be > 0, got {self.mean_span_words}")
    if not 0.0 <= self.speech_fraction <= 1.0:
      raise ValueError(f"speech_fraction (eta) must be in [0, 1], got {self.speech_fraction}")

  def plan(self, utt: Utterance, rng: np.random.Generator):
    spans, w = [], 0
    while w < utt.num_words:
      length = max(1, int(rng.poisson(self.mean_span_words)))
      m = SPEECH if rng.random() < self.speech_fraction else TEXT
      spans.append((w, min(w + length, utt.num_words), m))
      w += length
    return merge_spans(spans)

  def speech_bounds(self, utt):
    return utt.word_frame_spans[:, 0], utt.word_frame_spans[:, 1]


@gin.configurable
@dataclasses.dataclass(frozen=True)
class WordAlignedInterleave(_Interleave):
  """Spirit LM word-level interleaving (see module docstring)."""
  switch_prob: float = 0.2
  min_span_words: int = 1
  task_tag: str = "[INTERLEAVE]"
  text_marker: str = "[TEXT]"
  speech_marker: str = "[SPEECH]"
  train_markers: bool = True
  name = "interleaved_word"

  def __post_init__(self):
    if not 0.0 <= self.switch_prob <= 1.0:
      raise ValueError(f"switch_prob must be in [0, 1], got {self.switch_prob}")
    if self.min_span_words < 1:
      raise ValueError(f"min_span_words must be >= 1, got {self.min_span_words}")

  def plan(self, utt: Utterance, rng: np.random.Generator):
    m = SPEECH if rng.random() < 0.5 else TEXT
    spans, start = [], 0
    for w in range(1, utt.num_words):
      if w - start >= self.min_span_words and rng.random() < self.switch_prob:
        spans.append((start, w, m))
        start, m = w, 1 - m
    spans.append((start, utt.num_words, m))
    return spans

  def speech_bounds(self, utt):
    bounds = utt.boundary_tiles()
    return bounds[:-1], bounds[1:]
