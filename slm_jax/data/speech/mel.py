"""Log-mel features (vectorized numpy) and their inversion to audio by Griffin-Lim.

Frames: T = ceil(P / hop); frame t is centred on sample t * hop (hann window of `win_length`
inside an `n_fft` FFT, reflect padding), so a decoded signal has T * hop samples. Features are
natural-log mel magnitudes (slaney-normalized filters), floored at `log_floor`, the convention
under which speech spans roughly [-7, 2] (measured on flite and espeak-ng speech: 99.9th
percentile 0.4-0.7, maximum under 2).
"""
from __future__ import annotations

import dataclasses
import functools
from typing import Sequence

import gin
import numpy as np


@gin.configurable
@dataclasses.dataclass(frozen=True)
class MelConfig:
  sample_rate: int = 16000
  n_fft: int = 1024
  win_length: int = 800
  hop_length: int = 200
  n_mels: int = 80
  fmin: float = 0.0
  fmax: float = 8000.0
  log_floor: float = 1e-5

  def __post_init__(self):
    if self.win_length > self.n_fft:
      raise ValueError(f"win_length {self.win_length} > n_fft {self.n_fft}")
    if self.fmax > self.sample_rate / 2:
      raise ValueError(f"fmax {self.fmax} is above Nyquist ({self.sample_rate / 2})")

  @property
  def frame_rate(self) -> float:
    return self.sample_rate / self.hop_length

  def num_frames(self, num_samples: int) -> int:
    return -(-int(num_samples) // self.hop_length)

  def to_dict(self) -> dict:
    return dataclasses.asdict(self)

  @classmethod
  def from_dict(cls, d: dict) -> "MelConfig":
    return cls(**d)


@functools.lru_cache(maxsize=8)
def _tables(cfg: MelConfig):
  import librosa  # pylint: disable=import-outside-toplevel
  import scipy.signal  # pylint: disable=import-outside-toplevel
  win = scipy.signal.get_window("hann", cfg.win_length, fftbins=True).astype(np.float32)
  left = (cfg.n_fft - cfg.win_length) // 2
  window = np.zeros(cfg.n_fft, np.float32)
  window[left:left + cfg.win_length] = win
  mel_basis = librosa.filters.mel(sr=cfg.sample_rate, n_fft=cfg.n_fft, n_mels=cfg.n_mels,
                                  fmin=cfg.fmin, fmax=cfg.fmax, norm="slaney").astype(np.float32)
  return window, np.ascontiguousarray(mel_basis.T)  # [n_fft], [n_fft // 2 + 1, M]


def _frames(audio_P: np.ndarray, cfg: MelConfig) -> np.ndarray:
  """float32[P] -> windowed frames float32[T, n_fft] (T = ceil(P / hop))."""
  hop, half = cfg.hop_length, cfg.n_fft // 2
  t = cfg.num_frames(audio_P.shape[0])
  x = np.pad(audio_P, (0, t * hop - audio_P.shape[0]))
  mode = "reflect" if x.shape[0] > half else "constant"
  x = np.pad(x, (half, half), mode=mode)
  return np.lib.stride_tricks.sliding_window_view(x, cfg.n_fft)[::hop][:t]


def log_mel_batch(audios: Sequence[np.ndarray], cfg: MelConfig) -> list[np.ndarray]:
  """Log-mel of several utterances with one FFT and one matmul: list of float32[T_i, n_mels]."""
  import scipy.fft  # pylint: disable=import-outside-toplevel
  window, freq_to_mel = _tables(cfg)
  frames = [_frames(np.asarray(a, np.float32), cfg) for a in audios]
  counts = [f.shape[0] for f in frames]
  if not counts or sum(counts) == 0:
    return [np.zeros([0, cfg.n_mels], np.float32) for _ in audios]
  windows = np.concatenate(frames, axis=0) * window                 # [T, n_fft]
  magnitudes = np.abs(scipy.fft.rfft(windows, axis=-1))               # [T, n_fft // 2 + 1]
  mel_TM = np.log(np.maximum(magnitudes @ freq_to_mel, cfg.log_floor))
  return np.split(mel_TM.astype(np.float32), np.cumsum(counts)[:-1], axis=0)


def log_mel(audio_P: np.ndarray, cfg: MelConfig) -> np.ndarray:
  """float32[P] -> log-mel float32[T, n_mels]."""
  return log_mel_batch([audio_P], cfg)[0]


@functools.lru_cache(maxsize=1)
def _griffinlim_seed_arg() -> str:
  """librosa >= 1.0 names the seed `rng` (and deprecates `random_state`); 0.11 `random_state`."""
  import inspect  # pylint: disable=import-outside-toplevel
  import librosa  # pylint: disable=import-outside-toplevel
  return "rng" if "rng" in inspect.signature(librosa.griffinlim).parameters else "random_state"


@gin.configurable
def mel_to_audio(log_mel_TM: np.ndarray, cfg: MelConfig, n_iter: int = 64,
                 inversion: str = "nnls", seed: int = 0) -> np.ndarray:
  """Log-mel float[T, n_mels] -> float32 audio [T * hop] by mel inversion + Griffin-Lim.

  inversion: "nnls" (librosa's non-negative least squares, best quality) or "pinv" (fast).
  """
  import librosa  # pylint: disable=import-outside-toplevel
  log_mel_TM = np.asarray(log_mel_TM, np.float32)
  t = log_mel_TM.shape[0]
  if t == 0:
    return np.zeros([0], np.float32)
  mel_MT = np.exp(log_mel_TM).T
  if inversion == "nnls":
    spectrogram = librosa.feature.inverse.mel_to_stft(  # [n_fft // 2 + 1, T]
        mel_MT, sr=cfg.sample_rate, n_fft=cfg.n_fft, power=1.0, fmin=cfg.fmin, fmax=cfg.fmax,
        norm="slaney")
  elif inversion == "pinv":
    _, freq_to_mel = _tables(cfg)
    spectrogram = np.maximum(np.linalg.pinv(freq_to_mel.T) @ mel_MT, 0.0)
  else:
    raise ValueError(f"inversion must be 'nnls' or 'pinv', got {inversion!r}")
  # librosa's centred STFT of T * hop samples has T + 1 frames: repeat the last one.
  spectrogram = np.concatenate([spectrogram, spectrogram[:, -1:]], axis=1)
  audio = librosa.griffinlim(
      spectrogram.astype(np.float32), n_iter=n_iter, hop_length=cfg.hop_length,
      win_length=cfg.win_length, n_fft=cfg.n_fft, window="hann", center=True,
      length=t * cfg.hop_length, **{_griffinlim_seed_arg(): seed})
  return np.clip(audio, -1.0, 1.0).astype(np.float32)
