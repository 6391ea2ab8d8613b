"""Single-modality and paired templates: text LM, speech LM, ASR, TTS.

    text LM    [BOS] [TEXT_LM] text... [EOS]                      loss: text, EOS
    speech LM  [BOS] [SPEECH_LM] speech... [EOS]                  loss: speech, EOS
    ASR        [BOS] [ASR] [SPEECH] speech... [TEXT] text [EOS]   loss: text answer, EOS
    TTS        [BOS] [TTS] [TEXT] text [SPEECH] speech... [EOS]   loss: speech answer, EOS

Task tags and markers are names of UnifiedVocab specials (gin-configurable; "" drops one).
"""
from __future__ import annotations

import dataclasses

import gin
import numpy as np

from slm_jax.data.templates.base import Template
from slm_jax.data.templates.sequence import SequenceBuilder
from slm_jax.data.templates.utterance import Utterance
from slm_jax.unified_vocab import UnifiedVocab


def append_words_text(seq: SequenceBuilder, utt: Utterance, start: int, end: int, trained: bool):
  """Text of words [start, end), one piece per word so truncation can stop at word boundaries."""
  offsets = np.concatenate([[0], np.cumsum(utt.word_text_lens)])
  for w in range(start, end):
    seq.text(utt.word_text_ids[offsets[w]:offsets[w + 1]], trained, cut_after=True)


def append_speech_tiles(seq: SequenceBuilder, utt: Utterance, bounds: np.ndarray, start: int,
                        end: int, trained: bool):
  """Frames [bounds[start], bounds[end]) as one piece per word (cut points at word boundaries)."""
  for w in range(start, end):
    seq.speech(utt.speech_frames[bounds[w]:bounds[w + 1]], trained, cut_after=True)


@gin.configurable
@dataclasses.dataclass(frozen=True)
class TextLM(Template):
  """[BOS] [TEXT_LM] text... [EOS]; trains text and EOS. Truncates at word boundaries."""
  task_tag: str = "[TEXT_LM]"
  name = "text_lm"
  needs_text = True

  def build(self, utt, plan, vocab: UnifiedVocab) -> SequenceBuilder:
    seq = SequenceBuilder(vocab).special(self.task_tag)
    append_words_text(seq, utt, 0, utt.num_words, trained=True)
    return seq


@gin.configurable
@dataclasses.dataclass(frozen=True)
class SpeechLM(Template):
  """[BOS] [SPEECH_LM] speech... [EOS]; trains speech and EOS (unit continuation).

  With word timings a truncation ends at a word end; without, it may cut anywhere.
  """
  task_tag: str = "[SPEECH_LM]"
  name = "speech_lm"
  needs_speech = True

  def build(self, utt, plan, vocab: UnifiedVocab) -> SequenceBuilder:
    seq = SequenceBuilder(vocab).special(self.task_tag)
    if utt.aligned:
      ends = utt.word_frame_spans[:, 1]
      bounds = np.concatenate([[0], ends[:-1], [utt.num_frames]])
      append_speech_tiles(seq, utt, bounds, 0, utt.num_words, trained=True)
    else:
      seq.speech(utt.speech_frames, trained=True)
    return seq


@gin.configurable
@dataclasses.dataclass(frozen=True)
class ASR(Template):
  """[BOS] [ASR] [SPEECH] speech... [TEXT] text [EOS]; trains only the text answer and EOS."""
  task_tag: str = "[ASR]"
  speech_marker: str = "[SPEECH]"
  text_marker: str = "[TEXT]"
  name = "asr"
  needs_text = True
  needs_speech = True
  truncation = "words"

  def build(self, utt, plan, vocab: UnifiedVocab) -> SequenceBuilder:
    seq = SequenceBuilder(vocab).special(self.task_tag).special(self.speech_marker)
    seq.speech(utt.speech_frames, trained=False).special(self.text_marker)
    return seq.text(utt.word_text_ids, trained=True)


@dataclasses.dataclass(frozen=True)
class TextToSpeechTags(Template):
  """The tags and needs of a text -> speech example (TTS, and word-interleaved WordTTS)."""
  task_tag: str = "[TTS]"
  text_marker: str = "[TEXT]"
  speech_marker: str = "[SPEECH]"
  needs_text = True
  needs_speech = True
  truncation = "words"


@gin.configurable
@dataclasses.dataclass(frozen=True)
class TTS(TextToSpeechTags):
  """[BOS] [TTS] [TEXT] text [SPEECH] speech... [EOS]; trains only the speech answer and EOS."""
  name = "tts"

  def build(self, utt, plan, vocab: UnifiedVocab) -> SequenceBuilder:
    seq = SequenceBuilder(vocab).special(self.task_tag).special(self.text_marker)
    seq.text(utt.word_text_ids, trained=False).special(self.speech_marker)
    return seq.speech(utt.speech_frames, trained=True)
