"""SpecAugment (Park et al., 2019) for discrete speech inputs: mask time spans and mel bands of the
speech a model only reads.

A model that reads the same few hours of speech for many epochs learns to recognize utterances
rather than words: its training CTC loss keeps falling while the held-out one stops. Masking parts
of the speech it conditions on (an ASR prompt) makes every epoch of an utterance look different,
as SpecAugment does for spectrogram encoders. Here the speech is dMel tokens: each position holds
`stack` frames of `mel_bins` levels (channel c = frame * mel_bins + bin), so a time mask sets the
channels of consecutive frames, and a band mask the same bins of every frame of the utterance, to
`fill_level` (level 0 is the quietest: masked speech reads as silence).

Only *conditioning* speech is masked: a speech position whose token is not a trained target
(the loss weight of the position before it is 0), i.e. ASR prompts, never the speech a TTS or
speech-LM example learns to write. Targets are left as they were (their weights are 0 there).
Rows come and go through grain's `random_map`, so the masks are a deterministic function of the
seed and the row's index: a resumed run sees the same masks.
"""
from __future__ import annotations

import dataclasses

import gin
import numpy as np

from slm_jax.configuration import ConfigError


@gin.configurable
@dataclasses.dataclass(frozen=True)
class SpeechMasking:
  """Masks for the conditioning speech of a packed row (module docstring).

  time_masks: spans per utterance, each `U{0..max_time_width}` frames wide and at most
    `max_time_ratio` of the utterance's frames.
  band_masks: mel bands per utterance, each `U{0..max_band_width}` bins wide, on every frame.
  stack, mel_bins: the speech tokenizer's layout (K = stack * mel_bins channels per position).
  """
  time_masks: int = 2
  max_time_width: int = 20
  max_time_ratio: float = 0.1
  band_masks: int = 2
  max_band_width: int = 15
  stack: int = 4
  mel_bins: int = 80
  fill_level: int = 0

  def __post_init__(self):
    for name in ("time_masks", "max_time_width", "band_masks", "max_band_width", "fill_level"):
      if getattr(self, name) < 0:
        raise ConfigError(f"SpeechMasking.{name}={getattr(self, name)} must be >= 0")
    if self.stack < 1 or self.mel_bins < 1:
      raise ConfigError(f"SpeechMasking: stack={self.stack} and mel_bins={self.mel_bins} must be >= 1")
    if not 0.0 <= self.max_time_ratio <= 1.0:
      raise ConfigError(f"SpeechMasking.max_time_ratio={self.max_time_ratio} must be in [0, 1]")
    if self.max_band_width > self.mel_bins:
      raise ConfigError(f"SpeechMasking.max_band_width={self.max_band_width} exceeds "
                        f"mel_bins={self.mel_bins}")

  def check_channels(self, num_channels: int, first_codebook_size: int) -> None:
    """The model's speech layout must be the one the masks assume."""
    if num_channels != self.stack * self.mel_bins:
      raise ConfigError(
          f"SpeechMasking assumes K = stack x mel_bins = {self.stack} x {self.mel_bins} = "
          f"{self.stack * self.mel_bins} speech channels, the vocabulary has K = {num_channels}: "
          "set SpeechMasking.stack / .mel_bins to the speech tokenizer's (dMel only)")
    if self.fill_level >= first_codebook_size:
      raise ConfigError(f"SpeechMasking.fill_level={self.fill_level} is not a code of a "
                        f"{first_codebook_size}-level channel")

  def fingerprint(self) -> dict:
    return dataclasses.asdict(self)


def conditioning_speech_runs(row: dict, speech_start: int) -> list[tuple[int, int]]:
  """[(start, end)) index ranges of a row's conditioning speech (module docstring), one per run of
  consecutive such positions in one segment."""
  tokens, segments, weights = row["tokens"], row["segment_ids"], row["loss_weights"]
  is_input = np.zeros(tokens.shape, bool)
  is_input[1:] = weights[:-1] == 0
  is_input[0] = True
  cond = (tokens >= speech_start) & is_input & (segments > 0)
  runs, i, n = [], 0, len(tokens)
  while i < n:
    if not cond[i]:
      i += 1
      continue
    j = i + 1
    while j < n and cond[j] and segments[j] == segments[i]:
      j += 1
    runs.append((i, j))
    i = j
  return runs


def mask_row(row: dict, rng: np.random.Generator, masking: SpeechMasking, speech_start: int) -> dict:
  """A copy of `row` with its conditioning speech masked (tokens and speech_codes only)."""
  runs = conditioning_speech_runs(row, speech_start)
  if not runs:
    return row
  m, stack = masking.mel_bins, masking.stack
  # All K channels of the row's positions: [L, K] (channel 0 lives in `tokens` as a vocab id).
  codes_LK = np.concatenate([(row["tokens"] - speech_start)[:, None], row["speech_codes"]], axis=1)
  codes_LK = codes_LK.copy()
  for start, end in runs:
    utt_PFM = codes_LK[start:end].reshape(end - start, stack, m)   # positions, frames, bins (view)
    frames_FM = utt_PFM.reshape(-1, m)
    num_frames = frames_FM.shape[0]
    widest = min(masking.max_time_width, int(masking.max_time_ratio * num_frames))
    for _ in range(masking.time_masks):
      w = int(rng.integers(0, widest + 1))
      t0 = int(rng.integers(0, num_frames - w + 1))
      frames_FM[t0:t0 + w, :] = masking.fill_level
    for _ in range(masking.band_masks):
      w = int(rng.integers(0, masking.max_band_width + 1))
      f0 = int(rng.integers(0, m - w + 1))
      frames_FM[:, f0:f0 + w] = masking.fill_level
    codes_LK[start:end] = frames_FM.reshape(end - start, stack * m)
  out = dict(row)
  out["tokens"] = np.where(row["tokens"] >= speech_start, codes_LK[:, 0] + speech_start,
                           row["tokens"]).astype(row["tokens"].dtype)
  out["speech_codes"] = codes_LK[:, 1:].astype(row["speech_codes"].dtype)
  return out
