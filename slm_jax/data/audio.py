"""Audio I/O: read with soundfile, mix down to mono, resample, convert int16 <-> float32.

Every failure on a file is an `AudioError` naming the file and the problem. Pipelines that
would rather drop bad examples use `BadExamplePolicy` ("raise" | "skip"), which counts what it
skipped and says so, so bad data is never dropped silently.
"""
from __future__ import annotations

import collections
import logging
import os
from typing import Any, Callable, Optional

import gin
import numpy as np

from slm_jax.errors import SlmError

log = logging.getLogger(__name__)


class AudioError(SlmError, ValueError):
  """A file or array could not be used as audio; the message names it and the problem."""


# -- conversions ------------------------------------------------------------------------------
def to_float32(audio: np.ndarray) -> np.ndarray:
  """int16 (or other ints) -> float32 in [-1, 1); float arrays pass through as float32."""
  a = np.asarray(audio)
  if np.issubdtype(a.dtype, np.integer):
    return (a.astype(np.float32) / float(np.iinfo(a.dtype).max + 1)).astype(np.float32)
  return a.astype(np.float32, copy=False)


def to_int16(audio: np.ndarray) -> np.ndarray:
  """float audio in [-1, 1] -> int16 (clipped); int16 passes through."""
  a = np.asarray(audio)
  if a.dtype == np.int16:
    return a
  if np.issubdtype(a.dtype, np.integer):
    a = to_float32(a)
  return np.clip(np.round(a * 32768.0), -32768, 32767).astype(np.int16)


def to_mono(audio: np.ndarray) -> np.ndarray:
  """[P] or [P, channels] (soundfile layout) -> [P] by averaging channels."""
  a = np.asarray(audio)
  if a.ndim == 1:
    return a
  if a.ndim == 2:
    return a.mean(axis=1).astype(a.dtype if np.issubdtype(a.dtype, np.floating) else np.float32)
  raise AudioError(f"audio must be [samples] or [samples, channels], got shape {a.shape}")


@gin.configurable
def resample(audio: np.ndarray, orig_rate: int, target_rate: int,
             quality: str = "soxr_hq") -> np.ndarray:
  """Resamples float32 mono audio from `orig_rate` to `target_rate` (librosa / soxr)."""
  audio = to_float32(audio)
  if int(orig_rate) == int(target_rate):
    return audio
  if orig_rate <= 0 or target_rate <= 0:
    raise AudioError(f"sample rates must be positive, got {orig_rate} -> {target_rate}")
  import librosa  # pylint: disable=import-outside-toplevel
  return librosa.resample(audio, orig_sr=int(orig_rate), target_sr=int(target_rate),
                          res_type=quality).astype(np.float32)


# -- reading / writing ------------------------------------------------------------------------
@gin.configurable
def read_audio(path: str, sample_rate: Optional[int] = None, mono: bool = True,
               min_samples: int = 1) -> tuple[np.ndarray, int]:
  """Reads an audio file as float32 (mono by default), resampled to `sample_rate` if given.

  Returns (audio float32[P] (or [P, channels] with mono=False), rate). Raises AudioError when the file
  is missing, unreadable/corrupt, has fewer than `min_samples` samples, or holds NaN/inf.
  """
  import soundfile as sf  # pylint: disable=import-outside-toplevel
  if not os.path.exists(path):
    raise AudioError(f"audio file {path!r} does not exist")
  if os.path.isdir(path):
    raise AudioError(f"audio path {path!r} is a directory, not a file")
  if os.path.getsize(path) == 0:
    raise AudioError(f"audio file {path!r} is empty (0 bytes)")
  try:
    audio, rate = sf.read(path, dtype="float32", always_2d=False)
  except (RuntimeError, sf.LibsndfileError, TypeError, ValueError) as e:
    raise AudioError(f"audio file {path!r} is corrupt or in an unsupported format: {e}") from e
  return _finish(audio, rate, path, sample_rate, mono, min_samples)


def _finish(audio, rate, what, sample_rate, mono, min_samples):
  if mono:
    audio = to_mono(audio).astype(np.float32)
  if audio.shape[0] < min_samples:
    raise AudioError(f"audio {what!r} has {audio.shape[0]} samples (needs >= {min_samples}): "
                     "the recording is empty")
  if not np.all(np.isfinite(audio)):
    raise AudioError(f"audio {what!r} contains NaN or inf samples")
  if sample_rate is not None and int(rate) != int(sample_rate):
    if audio.ndim == 2:
      audio = np.stack([resample(c, rate, sample_rate) for c in audio.T], axis=1)
    else:
      audio = resample(audio, rate, sample_rate)
    rate = sample_rate
  return audio, int(rate)


def write_audio(path: str, audio: np.ndarray, sample_rate: int, subtype: str = "PCM_16") -> str:
  """Writes audio (float32 in [-1, 1] or int16) to `path` (format from the extension)."""
  import soundfile as sf  # pylint: disable=import-outside-toplevel
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  a = np.asarray(audio)
  if np.issubdtype(a.dtype, np.floating):
    a = np.clip(a, -1.0, 1.0)
  sf.write(path, a, int(sample_rate), subtype=subtype)
  return path


# -- skip-and-count ---------------------------------------------------------------------------
@gin.configurable
class BadExamplePolicy:
  """Applies a policy to examples that fail with AudioError (or `errors`): raise or skip+count.

  `policy="raise"` re-raises; `policy="skip"` returns None, counts the failure by reason, logs the
  first few, and `report()` / `summary()` say how many were skipped. Optional `max_skip_fraction`
  turns a mostly-broken corpus back into an error.

      policy = BadExamplePolicy("skip")
      for path in paths:
        audio = policy.call(read_audio, path, key=path)
        if audio is None: continue
      print(policy.summary())
  """

  def __init__(self, policy: str = "raise", errors: tuple[type, ...] = (AudioError,),
               max_logged: int = 5, max_skip_fraction: Optional[float] = None):
    if policy not in ("raise", "skip"):
      raise ValueError(f"bad-example policy must be 'raise' or 'skip', got {policy!r}")
    self.policy = policy
    self.errors = tuple(errors)
    self.max_logged = max_logged
    self.max_skip_fraction = max_skip_fraction
    self.num_ok = 0
    self.num_skipped = 0
    self.reasons: collections.Counter = collections.Counter()
    self.examples: list[str] = []

  def call(self, fn: Callable[..., Any], *args, key: str = "", **kwargs) -> Any:
    """Returns fn(*args, **kwargs), or None (counted) when it fails and the policy is 'skip'."""
    try:
      out = fn(*args, **kwargs)
    except self.errors as e:
      if self.policy == "raise":
        raise
      self._record(e, key)
      return None
    self.num_ok += 1
    return out

  def _record(self, e: Exception, key: str) -> None:
    self.num_skipped += 1
    self.reasons[type(e).__name__] += 1
    if len(self.examples) < self.max_logged:
      msg = f"{key}: {e}" if key else str(e)
      self.examples.append(msg)
      log.warning("skipping bad example (%d so far): %s", self.num_skipped, msg)
    total = self.num_ok + self.num_skipped
    if (self.max_skip_fraction is not None and total >= 20 and
        self.num_skipped / total > self.max_skip_fraction):
      raise AudioError(f"{self.num_skipped} of {total} examples were bad (> max_skip_fraction="
                       f"{self.max_skip_fraction}); first problems: {self.examples}")

  def report(self) -> dict:
    return {"policy": self.policy, "ok": self.num_ok, "skipped": self.num_skipped,
            "reasons": dict(self.reasons), "examples": list(self.examples)}

  def summary(self) -> str:
    s = f"{self.num_ok} ok, {self.num_skipped} skipped (policy={self.policy})"
    if self.num_skipped:
      s += f"; reasons {dict(self.reasons)}; e.g. {self.examples[0]}"
    return s
