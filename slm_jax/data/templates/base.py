"""The template interface: utterance + per-example seed -> one contract-3 training sequence.

A template first draws its random decisions (`plan`, from a numpy Generator seeded per example),
then builds the sequence (`build`). Truncation to `max_length` is one of:

  "stream": cut the built sequence at the last word boundary that fits (SequenceBuilder.finish);
            the EOS after a cut is not trained. Used by LM and interleaving templates.
  "words":  rebuild from the first k words of the utterance (text ids and the speech up to the end
            of word k-1 stay aligned), with the largest k that fits. Used by paired templates
            (ASR, TTS, instruction), whose answer must stay complete and match the prompt.
            Needs word timings; without them a too-long example is skipped as "too_long".
"""
from __future__ import annotations

from typing import Any, Callable

import numpy as np

from slm_jax.data.templates.sequence import SequenceBuilder
from slm_jax.data.templates.utterance import SkipExample, Utterance
from slm_jax.unified_vocab import UnifiedVocab


class Template:
  """Base class; subclasses are frozen gin-configurable dataclasses."""

  name: str = "template"
  needs_text: bool = False
  needs_speech: bool = False
  needs_alignment: bool = False
  truncation: str = "stream"

  def bind(self, encode_text: Callable[[str], np.ndarray]) -> "Template":
    """Returns a template ready to use with this text vocabulary (e.g. encoded instructions)."""
    del encode_text
    return self

  def plan(self, utt: Utterance, rng: np.random.Generator) -> Any:
    del utt, rng
    return None

  def build(self, utt: Utterance, plan: Any, vocab: UnifiedVocab) -> SequenceBuilder:
    raise NotImplementedError

  def check(self, utt: Utterance) -> None:
    """Raises SkipExample when the utterance lacks what this template needs."""
    if self.needs_text and not utt.has_text:
      raise SkipExample("empty_transcript", f"{self.name} needs a non-empty transcript")
    if self.needs_speech and not utt.has_speech:
      raise SkipExample("no_speech", f"{self.name} needs speech frames")
    if self.needs_alignment:
      utt.require_alignment()

  def __call__(self, utt: Utterance, seed, vocab: UnifiedVocab,
               max_length: int | None = None) -> dict[str, np.ndarray]:
    """Builds the example; `seed` is anything np.random.default_rng accepts (e.g. int32[2])."""
    self.check(utt)
    rng = np.random.default_rng(np.asarray(seed, np.int64) & 0xFFFFFFFF)
    plan = self.plan(utt, rng)
    seq = self.build(utt, plan, vocab)
    if self.truncation == "stream" or max_length is None or len(seq) + 1 <= max_length:
      return seq.finish(max_length)
    if not utt.aligned or utt.num_words < 2:
      raise SkipExample("too_long", f"{len(seq) + 1} tokens > max_length={max_length} and the "
                        "utterance cannot be shortened at a word boundary (no word timings)")
    lo, hi = 0, utt.num_words - 1  # invariant: prefix(lo) fits (lo=0: none), prefix(hi+1) does not
    while lo < hi:
      mid = (lo + hi + 1) // 2
      if len(self.build(utt.prefix(mid), plan, vocab)) + 1 <= max_length:
        lo = mid
      else:
        hi = mid - 1
    if lo == 0:
      raise SkipExample("too_long", f"even the first word does not fit in max_length={max_length}")
    return self.build(utt.prefix(lo), plan, vocab).finish(max_length)
