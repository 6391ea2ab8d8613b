"""Instruction / chat template: a user prompt (speech or text) -> an assistant answer.

    [BOS] [INSTRUCT] [USER] [TEXT] instruction... <prompt> [ASSISTANT] <answer> [EOS]

where <prompt> / <answer> is `[SPEECH] frames...` or `[TEXT] text...`. Loss only on the answer
(its marker, content and EOS).

For a corpus of plain utterances the instructions are SYNTHETIC, built from the utterance itself:
  speech_to_text   "Write down what was said."  speech prompt -> text answer (transcription)
  text_to_speech   "Say this:" + text           text prompt   -> speech answer (read aloud)
  speech_to_speech "Repeat what was said."      speech prompt -> speech answer (copy)
They teach the chat structure and cross-modal following, not open-ended assistant behaviour.
"""
from __future__ import annotations

import dataclasses
from typing import Callable

import gin
import numpy as np

from slm_jax.data.templates.base import Template
from slm_jax.data.templates.sequence import SequenceBuilder
from slm_jax.unified_vocab import UnifiedVocab

DEFAULT_INSTRUCTIONS = (
    ("speech_to_text", "Write down what was said."),
    ("text_to_speech", "Say this:"),
    ("speech_to_speech", "Repeat what was said."),
)


@gin.configurable
@dataclasses.dataclass(frozen=True)
class Instruct(Template):
  """Synthetic single-turn instructions from an utterance (see module docstring).

  Attributes:
    modes: (mode, weight) pairs; each example draws one mode with these weights.
    instructions: (mode, instruction text) pairs; encoded once with the text vocabulary (bind).
    instruction_ids: filled by bind(); (mode, text ids) pairs.
  """
  modes: tuple = (("speech_to_text", 1.0), ("text_to_speech", 1.0))
  instructions: tuple = DEFAULT_INSTRUCTIONS
  task_tag: str = "[INSTRUCT]"
  instruction_ids: tuple = ()
  name = "instruct"
  needs_text = True
  needs_speech = True
  truncation = "words"

  def __post_init__(self):
    known = dict(self.instructions)
    for mode, weight in self.modes:
      if mode not in known:
        raise ValueError(f"instruction mode {mode!r} has no instruction text; known: {list(known)}")
      if weight < 0:
        raise ValueError(f"mode weight must be >= 0, got {weight} for {mode}")
    if sum(w for _, w in self.modes) <= 0:
      raise ValueError(f"modes need a positive total weight, got {self.modes}")

  def bind(self, encode_text: Callable[[str], np.ndarray]) -> "Instruct":
    ids = tuple((m, np.asarray(encode_text(t), np.int32)) for m, t in self.instructions)
    return dataclasses.replace(self, instruction_ids=ids)

  def plan(self, utt, rng: np.random.Generator):
    names = [m for m, _ in self.modes]
    p = np.array([w for _, w in self.modes], np.float64)
    return names[int(rng.choice(len(names), p=p / p.sum()))]

  def build(self, utt, plan, vocab: UnifiedVocab) -> SequenceBuilder:
    if not self.instruction_ids:
      raise RuntimeError("Instruct template used before bind(encode_text): the instruction texts "
                         "must be encoded with the task's text vocabulary")
    prompt_mod, answer_mod = plan.split("_to_")
    seq = SequenceBuilder(vocab).special(self.task_tag).special("[USER]").special("[TEXT]")
    seq.text(dict(self.instruction_ids)[plan], trained=False)
    if prompt_mod == "speech":
      seq.special("[SPEECH]").speech(utt.speech_frames, trained=False)
    else:
      seq.text(utt.word_text_ids, trained=False)  # "Say this: <text>" continues the text
    seq.special("[ASSISTANT]")
    if answer_mod == "speech":
      return seq.special("[SPEECH]", trained=True).speech(utt.speech_frames, trained=True)
    return seq.special("[TEXT]", trained=True).text(utt.word_text_ids, trained=True)
