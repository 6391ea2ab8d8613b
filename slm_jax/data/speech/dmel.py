"""dMel: training-free speech tokens (Bai et al., 2024): each log-mel bin quantized to L levels.

80 mel bins x 16 levels at 80 Hz (16 kHz audio, hop 200) by default: K = 80 channels with codebook
16 each. Levels are evenly spaced in log-mel between `min_value` (-7) and `max_value` (2), values
outside are clipped; dequantizing returns the level centre, so the error within the range is at
most half a step. Decoding: level centres -> mel -> linear spectrogram -> Griffin-Lim.

`stack` > 1 puts that many consecutive mel frames into one position (K = stack x n_mels channels,
frame rate / stack): a model then reads and writes `stack` frames per step, e.g. 50 Hz mel frames
(for their audio quality) at 12.5 positions per second (for the sequence length). An utterance's
last position is padded with the lowest level (silence).
"""
from __future__ import annotations

import hashlib
import json
from typing import Sequence

import gin
import numpy as np

from slm_jax.data.speech import mel as mel_lib
from slm_jax.data.speech.base import SpeechTokenizer, SpeechTokenizerError


@gin.configurable
class DMelTokenizer(SpeechTokenizer):
  """dMel: log-mel [T, n_mels] quantized to `num_levels` levels per bin -> int32[T, n_mels]."""

  kind = "dmel"
  needs_files = False  # training-free: the default levels and mel settings need no saved files

  def __init__(self, num_levels: int = 16, min_value: float = -7.0, max_value: float = 2.0,
               mel: mel_lib.MelConfig | dict | None = None, griffin_lim_iters: int = 64,
               mel_inversion: str = "nnls", stack: int = 1):
    if num_levels < 2:
      raise SpeechTokenizerError(f"num_levels must be >= 2, got {num_levels}")
    if int(stack) < 1:
      raise SpeechTokenizerError(f"stack must be >= 1, got {stack}")
    if not max_value > min_value:
      raise SpeechTokenizerError(f"max_value ({max_value}) must exceed min_value ({min_value})")
    self.num_levels = int(num_levels)
    self.min_value = float(min_value)
    self.max_value = float(max_value)
    self.mel = mel_lib.MelConfig.from_dict(mel) if isinstance(mel, dict) else (
        mel or mel_lib.MelConfig())
    self.griffin_lim_iters = int(griffin_lim_iters)
    self.mel_inversion = mel_inversion
    self.stack = int(stack)

  # -- description ----------------------------------------------------------------------------
  @property
  def codebook_sizes(self) -> tuple[int, ...]:
    return (self.num_levels,) * (self.mel.n_mels * self.stack)

  @property
  def frame_rate(self) -> float:
    return self.mel.frame_rate / self.stack

  @property
  def sample_rate(self) -> int:
    return self.mel.sample_rate

  @property
  def step(self) -> float:
    """Distance between adjacent levels in log-mel."""
    return (self.max_value - self.min_value) / (self.num_levels - 1)

  @property
  def levels(self) -> np.ndarray:
    """Level centres float32[num_levels] in log-mel."""
    return (self.min_value + self.step * np.arange(self.num_levels)).astype(np.float32)

  @property
  def name(self) -> str:
    # Only what changes the codes enters the identity (not decoding options).
    ident = {"levels": self.num_levels, "min": self.min_value, "max": self.max_value,
             "mel": self.mel.to_dict()}
    if self.stack != 1:
      ident["stack"] = self.stack
    h = hashlib.sha1(json.dumps(ident, sort_keys=True).encode()).hexdigest()[:10]
    stacked = f"x{self.stack}" if self.stack != 1 else ""
    return f"dmel-{self.mel.n_mels}x{self.num_levels}{stacked}@{self.frame_rate:g}Hz-{h}"

  def num_frames(self, num_samples: int) -> int:
    return -(-self.mel.num_frames(num_samples) // self.stack)

  # -- quantization ---------------------------------------------------------------------------
  def quantize(self, log_mel_TM: np.ndarray) -> np.ndarray:
    """Log-mel float[T, M] -> level indices int32[T, M]."""
    x = (np.asarray(log_mel_TM, np.float32) - self.min_value) / self.step
    return np.clip(np.rint(x), 0, self.num_levels - 1).astype(np.int32)

  def dequantize(self, frames_TM: np.ndarray) -> np.ndarray:
    """Level indices int[T, M] -> log-mel float32[T, M] (level centres)."""
    return self.levels[np.asarray(frames_TM)]

  # -- encode / decode ------------------------------------------------------------------------
  def log_mel_batch(self, audios: Sequence[np.ndarray], sample_rate: int) -> list[np.ndarray]:
    return mel_lib.log_mel_batch([self.prepare(a, sample_rate) for a in audios], self.mel)

  def encode_batch(self, audios: Sequence[np.ndarray], sample_rate: int) -> list[np.ndarray]:
    mels = self.log_mel_batch(audios, sample_rate)
    if not mels:
      return []
    counts = np.cumsum([m.shape[0] for m in mels])[:-1]
    levels = np.split(self.quantize(np.concatenate(mels, axis=0)), counts, axis=0)
    return [self._stack(x) for x in levels] if self.stack != 1 else levels

  def _stack(self, levels_TM: np.ndarray) -> np.ndarray:
    """[T, M] mel levels -> [ceil(T / stack), stack * M], the last position padded with level 0."""
    t, m = levels_TM.shape
    padded = np.zeros((-(-t // self.stack) * self.stack, m), np.int32)
    padded[:t] = levels_TM
    return padded.reshape(-1, self.stack * m)

  def decode(self, frames_TK: np.ndarray) -> np.ndarray:
    frames_TK = self.check_frames(frames_TK)
    levels_TM = frames_TK.reshape(-1, self.mel.n_mels)       # unstack: stack frames per position
    return mel_lib.mel_to_audio(self.dequantize(levels_TM), self.mel, n_iter=self.griffin_lim_iters,
                                inversion=self.mel_inversion)

  # -- persistence ----------------------------------------------------------------------------
  def config(self) -> dict:
    return {"num_levels": self.num_levels, "min_value": self.min_value,
            "max_value": self.max_value, "mel": self.mel.to_dict(),
            "griffin_lim_iters": self.griffin_lim_iters, "mel_inversion": self.mel_inversion,
            "stack": self.stack}
