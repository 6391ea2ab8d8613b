"""A model ready for generation: parameters, vocabulary and tokenizers, checked against each other.

    session = Session.load("exports/exp1")                 # an inference checkpoint (slm-export)
    session = Session.from_workdir("runs/exp1", step=None) # a training run (exported on the fly)
    engine = session.engine(slots=8, max_length=1024)
    frames = session.encode_audio("in.wav")                # read, resampled, tokenized
    text = session.decode_text(text_ids)

The tokenizers are the files the inference checkpoint ships (`export_info.json`); a tokenizer
whose identity differs from the one the vocabulary spec names is a `VocabMismatchError`.
"""
from __future__ import annotations

import contextlib
import dataclasses
import os
import tempfile
from typing import Optional

import numpy as np

from slm_jax.data import audio as audio_lib
from slm_jax.errors import SlmError
from slm_jax.unified_vocab import UnifiedVocab, VocabMismatchError


class TokenizerUnavailableError(SlmError, ValueError):
  """The task needs a tokenizer the checkpoint does not ship (or one that cannot decode)."""


@dataclasses.dataclass
class Session:
  model: object
  vocab: UnifiedVocab
  text_vocab: Optional[object]
  speech_tokenizer: Optional[object]
  info: dict
  directory: str

  # -- loading --------------------------------------------------------------------------------
  @classmethod
  def load(cls, directory: str, mesh=None) -> "Session":
    from slm_jax.export import inference_checkpoint  # pylint: disable=import-outside-toplevel
    model, vocab, info = inference_checkpoint.load_inference_checkpoint(directory, mesh=mesh)
    text_vocab, speech = None, None
    for tok in info.get("tokenizers", []):
      path = os.path.join(os.path.abspath(directory), tok["path"])
      if tok["role"] == "text":
        text_vocab = _text_vocab(tok["kind"], path)
      elif tok["role"] == "speech":
        speech = _speech_tokenizer(tok["kind"], path)
    if text_vocab is None:
      text_vocab = _default_text_vocab(vocab)
    if speech is None:
      speech = _default_speech_tokenizer(vocab)
    check_tokenizers(vocab, text_vocab, speech, directory)
    return cls(model, vocab, text_vocab, speech, info, directory)

  @classmethod
  @contextlib.contextmanager
  def from_workdir(cls, workdir: str, step: Optional[int] = None, mesh=None):
    """A training run's checkpoint, through a temporary float32 inference checkpoint."""
    from slm_jax.export import inference_checkpoint  # pylint: disable=import-outside-toplevel
    with tempfile.TemporaryDirectory(prefix="slm-generate-") as tmp:
      out = os.path.join(tmp, "export")
      inference_checkpoint.export_inference_checkpoint(workdir, out, step=step)
      yield cls.load(out, mesh=mesh)

  @classmethod
  def from_model(cls, model, text_vocab=None, speech_tokenizer=None, info: Optional[dict] = None,
                 directory: str = "") -> "Session":
    """A live model (e.g. the parameters of a training step) with tokenizers, checked against
    its vocabulary like a loaded checkpoint's."""
    vocab = model.cfg.vocab
    check_tokenizers(vocab, text_vocab, speech_tokenizer, directory or "the model")
    return cls(model, vocab, text_vocab, speech_tokenizer, dict(info or {}), directory)

  def engine(self, **kwargs):
    from slm_jax.inference.engine import Engine  # pylint: disable=import-outside-toplevel
    return Engine(self.model, **kwargs)

  # -- text -----------------------------------------------------------------------------------
  def _need_text(self):
    if self.text_vocab is None:
      raise TokenizerUnavailableError(
          f"{self.directory} ships no text tokenizer; export it again with "
          "`slm-export --text_tokenizer PATH`")
    return self.text_vocab

  def encode_text(self, text: str) -> np.ndarray:
    """Text ids (text-vocabulary ids, not unified) of a sentence in the corpus's normal form."""
    from slm_jax.data.transcript import normalize_transcript  # pylint: disable=import-outside-toplevel
    words = normalize_transcript(text).split()
    ids, _ = self._need_text().encode_words(words)
    return ids

  def decode_text(self, text_ids: np.ndarray) -> str:
    return str(self._need_text().decode([int(i) for i in text_ids]))

  # -- speech ---------------------------------------------------------------------------------
  def encode_audio(self, path: str) -> np.ndarray:
    """Speech frames int32[T, K] of an audio file (resampled to the tokenizer's rate)."""
    tok = self.speech_tokenizer
    audio, rate = audio_lib.read_audio(path, sample_rate=tok.sample_rate)
    frames = tok.encode(audio, rate)
    if frames.shape[0] == 0:
      raise audio_lib.AudioError(f"audio file {path!r} is too short to give one speech frame")
    return frames

  def decode_speech(self, frames_TK: np.ndarray) -> np.ndarray:
    tok = self.speech_tokenizer
    if not tok.can_decode:
      raise TokenizerUnavailableError(f"the speech tokenizer {tok.name} cannot turn frames into audio")
    return tok.decode(frames_TK)


class AnswerStream:
  """An `on_tokens` callback for `batching.run_requests` that turns each request's new tokens
  into text deltas and audio chunks as they are decoded.

  on_text(index, new_text): the decoded text grew by `new_text`.
  on_audio(index, samples): `chunk_frames` more speech frames became audio (each chunk is decoded
    on its own, so chunk borders may click; the final chunk flushes what is left).
  """

  def __init__(self, session: "Session", on_text=None, on_audio=None, chunk_frames: int = 80):
    self.session, self.on_text, self.on_audio = session, on_text, on_audio
    self.chunk_frames = chunk_frames
    self._text_ids: dict[int, list] = {}
    self._text: dict[int, str] = {}
    self._frames: dict[int, list] = {}

  def __call__(self, index: int, tokens: np.ndarray, codes: np.ndarray, done: bool) -> None:
    from slm_jax.inference.prompts import split_answer  # pylint: disable=import-outside-toplevel
    text_ids, frames = split_answer(self.session.vocab, tokens, codes)
    if self.on_text is not None and len(text_ids):
      ids = self._text_ids.setdefault(index, [])
      ids += [int(i) for i in text_ids]
      text = self.session.decode_text(ids)
      previous = self._text.get(index, "")
      if text.startswith(previous) and len(text) > len(previous):
        self.on_text(index, text[len(previous):])
        self._text[index] = text
    if self.on_audio is not None:
      pending = self._frames.setdefault(index, [])
      pending += list(frames)
      while len(pending) >= self.chunk_frames or (done and pending):
        chunk, pending[:] = pending[:self.chunk_frames], pending[self.chunk_frames:]
        self.on_audio(index, self.session.decode_speech(np.asarray(chunk, np.int32)))


def _text_vocab(kind: str, path: str):
  from slm_jax.data.text.factory import get_text_vocabulary  # pylint: disable=import-outside-toplevel
  return get_text_vocabulary(kind or "sentencepiece", path)


def _speech_tokenizer(kind: str, path: str):
  from slm_jax.data.speech.factory import get_speech_tokenizer  # pylint: disable=import-outside-toplevel
  return get_speech_tokenizer(kind, path) if kind else _load_any(path)


def _load_any(path: str):
  from slm_jax.data.speech.factory import load_speech_tokenizer  # pylint: disable=import-outside-toplevel
  return load_speech_tokenizer(path)


def _default_text_vocab(vocab: UnifiedVocab):
  """A file-less text vocabulary (bytes) when the vocabulary names one and nothing is shipped."""
  from slm_jax.data.text.factory import KINDS  # pylint: disable=import-outside-toplevel
  for cls in KINDS.values():
    if not cls.needs_files:
      tok = cls()
      if tok.name == vocab.text_vocab_name or (not vocab.text_vocab_name and
                                               tok.size == vocab.text_size):
        return tok
  return None


def _default_speech_tokenizer(vocab: UnifiedVocab):
  """A file-less tokenizer (dMel) when the vocabulary names one and nothing is shipped."""
  from slm_jax.data.speech.factory import KINDS  # pylint: disable=import-outside-toplevel
  for kind, cls in KINDS.items():
    if not cls.needs_files:
      tok = cls()
      if not vocab.speech_tokenizer_name or tok.name == vocab.speech_tokenizer_name:
        if tuple(tok.codebook_sizes) == tuple(vocab.speech_codebook_sizes):
          return tok
  return None


def check_tokenizers(vocab: UnifiedVocab, text_vocab, speech, where: str) -> None:
  """Raises VocabMismatchError, naming `where`, unless the text tokenizer and the speech tokenizer
  (either may be None: not checked) are the ones `vocab` was built with: same fingerprints where
  the vocabulary records them, same sizes and codebooks."""
  if text_vocab is not None:
    if vocab.text_vocab_name and text_vocab.name != vocab.text_vocab_name:
      raise VocabMismatchError(f"{where}: the shipped text tokenizer is {text_vocab.name!r} but the "
                               f"model was trained with {vocab.text_vocab_name!r}")
    if text_vocab.size != vocab.text_size:
      raise VocabMismatchError(f"{where}: the text tokenizer has {text_vocab.size} ids, the model's "
                               f"vocabulary {vocab.text_size}")
  if speech is not None:
    if vocab.speech_tokenizer_name and speech.name != vocab.speech_tokenizer_name:
      raise VocabMismatchError(f"{where}: the shipped speech tokenizer is {speech.name!r} but the "
                               f"model was trained with {vocab.speech_tokenizer_name!r}")
    if tuple(speech.codebook_sizes) != tuple(vocab.speech_codebook_sizes):
      raise VocabMismatchError(f"{where}: the speech tokenizer's codebooks {speech.codebook_sizes} "
                               f"differ from the model's {vocab.speech_codebook_sizes}")
