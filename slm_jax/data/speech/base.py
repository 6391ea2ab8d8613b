"""The speech tokenizer interface (docs/architecture.md: speech is frames of K channels).

Every tokenizer turns mono audio float32[P] into frames int32[T, K] at `frame_rate`, channel k
taking values in [0, codebook_sizes[k]) (C_k, the codebook size of channel k), and where possible
decodes frames back to audio. Its `name` is stored as UnifiedVocab.speech_tokenizer_name.
`save(dir)` writes `speech_tokenizer.json` (plus any arrays); factory.load_speech_tokenizer(dir)
reads back whichever kind was saved (the kinds are listed in factory.KINDS).
"""
from __future__ import annotations

import abc
import json
import os
from typing import Any, Sequence

import numpy as np

from slm_jax.atomic_write import atomic_write
from slm_jax.data import audio as audio_lib
from slm_jax.errors import SlmError

SPEC_FILENAME = "speech_tokenizer.json"


class SpeechTokenizerError(SlmError, ValueError):
  """A speech tokenizer that cannot be built or loaded, or frames that do not fit it."""


class SpeechTokenizer(abc.ABC):
  """Audio float32[P] <-> frames int32[T, K]."""

  kind: str = ""            # its key in factory.KINDS and in speech_tokenizer.json
  needs_files: bool = True  # False: the kind builds a default without a saved directory

  # -- description ----------------------------------------------------------------------------
  @property
  @abc.abstractmethod
  def codebook_sizes(self) -> tuple[int, ...]:
    """Codebook size of each channel (len == K)."""

  @property
  @abc.abstractmethod
  def frame_rate(self) -> float:
    """Frames per second."""

  @property
  @abc.abstractmethod
  def sample_rate(self) -> int:
    """Sample rate the tokenizer works at; other rates are resampled on encode."""

  @property
  @abc.abstractmethod
  def name(self) -> str:
    """Stable identity string (UnifiedVocab.speech_tokenizer_name)."""

  @property
  def num_channels(self) -> int:
    return len(self.codebook_sizes)

  @property
  def can_decode(self) -> bool:
    return True

  def num_frames(self, num_samples: int) -> int:
    """Number of frames encode() returns for `num_samples` samples at `sample_rate`."""
    return int(np.ceil(num_samples * self.frame_rate / self.sample_rate))

  # -- encode / decode ------------------------------------------------------------------------
  def prepare(self, audio: np.ndarray, sample_rate: int) -> np.ndarray:
    """Any mono audio (int16 or float) at `sample_rate` -> float32[P] at self.sample_rate."""
    a = np.asarray(audio)
    if a.ndim != 1:
      raise audio_lib.AudioError(f"{self.name}: expected mono audio [P], got shape {a.shape}; "
                                 "mix down with slm_jax.data.audio.to_mono")
    a = audio_lib.to_float32(a)
    return audio_lib.resample(a, sample_rate, self.sample_rate)

  def encode(self, audio: np.ndarray, sample_rate: int) -> np.ndarray:
    """Mono audio [P] at `sample_rate` -> frames int32[T, K]."""
    return self.encode_batch([audio], sample_rate)[0]

  def encode_tf(self, audio, sample_rate):
    """The same inside tf.data: tf audio [P] (int16 or float), scalar rate -> tf.int32 [T, K]."""
    import tensorflow as tf  # pylint: disable=import-outside-toplevel

    def _np(a, rate):
      return self.encode(a, int(rate)).astype(np.int32)

    frames = tf.numpy_function(_np, [audio, sample_rate], tf.int32, stateful=False)
    frames.set_shape([None, self.num_channels])
    return frames

  @abc.abstractmethod
  def encode_batch(self, audios: Sequence[np.ndarray], sample_rate: int) -> list[np.ndarray]:
    """Several utterances at once (vectorized) -> list of int32[T_i, K]."""

  def decode(self, frames_TK: np.ndarray) -> np.ndarray:
    """Frames int32[T, K] -> float32 audio at `sample_rate`."""
    raise NotImplementedError(f"{self.name} cannot turn frames back into audio")

  def check_frames(self, frames_TK: np.ndarray, what: str = "frames") -> np.ndarray:
    """Validates shape [T, K], integer dtype and per-channel range; returns int32[T, K]."""
    return validate_frames(frames_TK, self.codebook_sizes, what=f"{what} for {self.name}")

  # -- persistence ----------------------------------------------------------------------------
  @abc.abstractmethod
  def config(self) -> dict[str, Any]:
    """JSON-able constructor arguments (arrays go in save_arrays)."""

  def save_arrays(self, directory: str) -> None:
    """Writes any arrays the tokenizer needs next to the spec (default: none)."""

  @classmethod
  def from_saved(cls, config: dict, directory: str) -> "SpeechTokenizer":
    return cls(**config)

  def spec(self) -> dict[str, Any]:
    return {"kind": self.kind, "name": self.name, "codebook_sizes": list(self.codebook_sizes),
            "frame_rate": self.frame_rate, "sample_rate": self.sample_rate,
            "config": self.config()}

  def save(self, directory: str) -> str:
    """Writes speech_tokenizer.json (+ arrays) into `directory`; returns the spec path."""
    os.makedirs(directory, exist_ok=True)
    self.save_arrays(directory)
    path = os.path.join(directory, SPEC_FILENAME)
    atomic_write(path, json.dumps(self.spec(), indent=2, sort_keys=True))
    return path

  @classmethod
  def load(cls, directory: str) -> "SpeechTokenizer":
    from slm_jax.data.speech.factory import load_speech_tokenizer  # pylint: disable=import-outside-toplevel
    tok = load_speech_tokenizer(directory)
    if cls is not SpeechTokenizer and not isinstance(tok, cls):
      raise SpeechTokenizerError(f"{directory} holds a {type(tok).__name__}, not a {cls.__name__}")
    return tok

  def __repr__(self) -> str:
    return f"{type(self).__name__}({self.name})"


def validate_frames(frames, codebook_sizes: Sequence[int], what: str = "frames") -> np.ndarray:
  """Checks frames int[T, K] against K codebook sizes; clear errors naming `what` and the value."""
  a = np.asarray(frames)
  k = len(codebook_sizes)
  if a.ndim == 1 and k == 1:
    a = a[:, None]
  if a.ndim != 2 or a.shape[1] != k:
    raise SpeechTokenizerError(f"{what}: expected shape [T, {k}], got {a.shape}")
  if not np.issubdtype(a.dtype, np.integer):
    raise SpeechTokenizerError(f"{what}: expected integer codes, got dtype {a.dtype}")
  if a.size:
    sizes = np.asarray(codebook_sizes)
    bad = (a < 0) | (a >= sizes[None, :])
    if bad.any():
      t, ch = np.argwhere(bad)[0]
      raise SpeechTokenizerError(
          f"{what}: code {int(a[t, ch])} at frame {t}, channel {ch} is out of range "
          f"[0, {int(sizes[ch])}) ({int(bad.sum())} bad codes); the units do not match the "
          "declared codebook sizes")
  return a.astype(np.int32, copy=False)
