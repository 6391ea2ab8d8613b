"""Generation prompts laid out exactly like the training templates' prefixes.

Each builder returns a `Prompt`: the unified ids (and extra speech channels) up to the point where
the model's answer starts, plus the modality constraint of that answer. They reuse the templates'
`SequenceBuilder`, so a prompt is byte-for-byte the beginning of a training sequence:

    asr        [BOS] [ASR] [SPEECH] speech... [TEXT]            -> text until EOS
    tts        [BOS] [TTS] [TEXT] text [SPEECH]                 -> speech until EOS
    continue   [BOS] [TEXT_LM] text...  |  [BOS] [SPEECH_LM] speech...   -> the same modality
    chat       [BOS] [INSTRUCT] [USER] [TEXT] instruction (text... | [SPEECH] speech...)
               [ASSISTANT]                                      -> the answer's marker decides
"""
from __future__ import annotations

import dataclasses
from typing import Optional

import numpy as np

from slm_jax.data.templates.sequence import SequenceBuilder
from slm_jax.errors import SlmError
from slm_jax.unified_vocab import EOS_ID, UnifiedVocab


class PromptBuildError(SlmError, ValueError):
  """A generation request without what its task needs (e.g. TTS without text)."""


@dataclasses.dataclass(frozen=True)
class Prompt:
  ids: np.ndarray                 # int32[n] unified ids
  codes: Optional[np.ndarray]     # int32[n, K-1] (None when K == 1)
  mode: str                       # sampling mode of the answer: text | speech | follow | any


def _finish(seq: SequenceBuilder, mode: str) -> Prompt:
  out = seq.finish(train_eos=True)          # appends EOS; a prompt stops before it
  ids = out["tokens"][:-1]
  assert out["tokens"][-1] == EOS_ID
  codes = out["speech_codes"][:-1] if "speech_codes" in out else None
  return Prompt(ids.astype(np.int32), None if codes is None else codes.astype(np.int32), mode)


def _need(value, what: str, task: str):
  if value is None or (hasattr(value, "__len__") and len(value) == 0):
    raise PromptBuildError(f"{task} needs {what}")
  return value


def asr(vocab: UnifiedVocab, frames_TK: np.ndarray) -> Prompt:
  _need(frames_TK, "speech frames (non-empty audio)", "asr")
  seq = SequenceBuilder(vocab).special("[ASR]").special("[SPEECH]")
  return _finish(seq.speech(frames_TK, trained=False).special("[TEXT]"), "text")


def tts(vocab: UnifiedVocab, text_ids: np.ndarray) -> Prompt:
  _need(text_ids, "text (a non-empty transcript)", "tts")
  seq = SequenceBuilder(vocab).special("[TTS]").special("[TEXT]")
  return _finish(seq.text(text_ids, trained=False).special("[SPEECH]"), "speech")


def continue_text(vocab: UnifiedVocab, text_ids: np.ndarray) -> Prompt:
  _need(text_ids, "text to continue", "continue")
  return _finish(SequenceBuilder(vocab).special("[TEXT_LM]").text(text_ids, trained=False), "text")


def continue_speech(vocab: UnifiedVocab, frames_TK: np.ndarray) -> Prompt:
  _need(frames_TK, "speech frames to continue", "continue")
  seq = SequenceBuilder(vocab).special("[SPEECH_LM]").speech(frames_TK, trained=False)
  return _finish(seq, "speech")


def chat(vocab: UnifiedVocab, instruction_ids: np.ndarray, frames_TK: Optional[np.ndarray] = None,
         text_ids: Optional[np.ndarray] = None) -> Prompt:
  """A user turn: an instruction in text, then optionally spoken or written content."""
  _need(instruction_ids, "an instruction (--text)", "chat")
  seq = SequenceBuilder(vocab).special("[INSTRUCT]").special("[USER]").special("[TEXT]")
  seq.text(instruction_ids, trained=False)
  if frames_TK is not None and len(frames_TK):
    seq.special("[SPEECH]").speech(frames_TK, trained=False)
  elif text_ids is not None and len(text_ids):
    seq.text(text_ids, trained=False)
  return _finish(seq.special("[ASSISTANT]"), "follow")


def split_answer(vocab: UnifiedVocab, tokens: np.ndarray, codes: Optional[np.ndarray]):
  """The text ids and speech frames [T, K] of a generated answer (specials and EOS dropped)."""
  tokens = np.asarray(tokens, np.int32)
  text_ids = vocab.unified_to_text(tokens[vocab.is_text(tokens)])
  speech = vocab.is_speech(tokens)
  frames = vocab.unified_to_speech(tokens[speech])[:, None]
  if vocab.num_channels > 1:
    frames = np.concatenate([frames, np.asarray(codes, np.int32)[speech]], axis=1)
  return text_ids.astype(np.int32), frames.astype(np.int32)
