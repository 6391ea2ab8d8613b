"""k-means units: K=1 speech tokens from log-mel features clustered on a corpus.

Features: 80 Hz log-mel frames averaged over each unit frame (`rate` Hz, e.g. 25 Hz = 640 samples
at 16 kHz), optionally stacked with `context` neighbouring unit frames on each side. Clustering is
scikit-learn's: greedy k-means++ on a seeded subsample, then Lloyd's iterations (KMeans) on up to
`max_points` frames, so the same data and seed give the same centroids. Encoding assigns each
frame its nearest centroid with one matmul per chunk (`assign`, numpy). Units can be deduplicated
(repeated consecutive units collapsed, run lengths returned). Decoding: each unit's centroid mel,
held for its duration, then Griffin-Lim.

Shapes: T unit frames, M mel bins, C units (the codebook size of the one channel), N frames pooled
over a corpus; a feature has d = M * (2 * context + 1) values.
"""
from __future__ import annotations

import hashlib
import os
from typing import Callable, Optional, Sequence

import gin
import numpy as np

from slm_jax.atomic_write import atomic_path
from slm_jax.data.speech import mel as mel_lib
from slm_jax.data.speech.base import SpeechTokenizer, SpeechTokenizerError

CENTROIDS_FILENAME = "centroids.npz"


# -- features ---------------------------------------------------------------------------------
def pool_frames(mel_TM: np.ndarray, mel_hop: int, unit_hop: int) -> np.ndarray:
  """Averages mel frames [T, M] into unit frames [ceil-ish(T * mel_hop / unit_hop), M].

  Mel frame j (centred on sample j * mel_hop) belongs to unit frame (j * mel_hop) // unit_hop.
  """
  t = mel_TM.shape[0]
  if t == 0:
    return mel_TM
  group = (np.arange(t) * mel_hop) // unit_hop
  starts = np.flatnonzero(np.r_[True, group[1:] != group[:-1]])
  sums = np.add.reduceat(mel_TM, starts, axis=0)
  return (sums / np.diff(np.r_[starts, t])[:, None]).astype(np.float32)


def stack_context(mel_TM: np.ndarray, context: int) -> np.ndarray:
  """[T, M] -> [T, M * (2 * context + 1)]: each frame with `context` neighbours (edge padded)."""
  if context == 0:
    return mel_TM
  padded = np.pad(mel_TM, ((context, context), (0, 0)), mode="edge")
  t = mel_TM.shape[0]
  return np.concatenate([padded[i:i + t] for i in range(2 * context + 1)], axis=1)


def dedup_units(units_T: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
  """Collapses repeated consecutive units: [T] or [T, 1] -> (units [T'] (same rank), runs int32[T'])."""
  u = np.asarray(units_T)
  if u.shape[0] == 0:
    return u, np.zeros([0], np.int32)
  flat = u.reshape(u.shape[0], -1)
  change = np.r_[True, np.any(flat[1:] != flat[:-1], axis=1)]
  starts = np.flatnonzero(change)
  runs = np.diff(np.r_[starts, flat.shape[0]]).astype(np.int32)
  return u[starts], runs


# -- k-means ----------------------------------------------------------------------------------
def assign(x: np.ndarray, centroids: np.ndarray, chunk: int = 65536) -> np.ndarray:
  """Nearest centroid of each row: x float[N, d], centroids float[C, d] -> int32[N] (ties ->
  lowest index). The encode-time hot path: one matmul per chunk, no per-call set-up."""
  c_sq = np.einsum("cd,cd->c", centroids, centroids)
  out = np.empty([x.shape[0]], np.int32)
  for s in range(0, x.shape[0], chunk):
    xs = x[s:s + chunk]
    # ||c||^2 - 2 x.c is enough for the argmin (||x||^2 is constant per row).
    out[s:s + chunk] = np.argmin(c_sq[None, :] - 2.0 * (xs @ centroids.T), axis=1)
  return out


@gin.configurable
def kmeans(x: np.ndarray, num_clusters: int, seed: int = 0, num_iters: int = 25,
           max_points: int = 200_000, init_points: int = 20_000, tol: float = 1e-4,
           log_fn: Optional[Callable[[str], None]] = None) -> np.ndarray:
  """k-means of rows x float[N, d] -> centroids float32[num_clusters, d], by scikit-learn.

  Greedy k-means++ seeds on `init_points` rows drawn with `seed`, then at most `num_iters` Lloyd
  iterations (sklearn KMeans, `tol` its center-shift tolerance) over at most `max_points` rows.
  Deterministic in `seed`; `log_fn` gets a summary line.
  """
  from sklearn.cluster import KMeans, kmeans_plusplus  # pylint: disable=import-outside-toplevel
  x = np.asarray(x, np.float32)
  n = x.shape[0]
  if n < num_clusters:
    raise SpeechTokenizerError(
        f"k-means needs at least num_units={num_clusters} feature frames, got {n}: fit on more "
        "audio or use fewer units")
  rng = np.random.default_rng(seed)
  if n > max_points:
    x = x[np.sort(rng.choice(n, max_points, replace=False))]
    n = max_points
  init_x = x if n <= init_points else x[np.sort(rng.choice(n, init_points, replace=False))]
  init, _ = kmeans_plusplus(init_x, num_clusters, random_state=seed)
  fit = KMeans(num_clusters, init=init, n_init=1, max_iter=num_iters, tol=tol,
               random_state=seed).fit(x)
  if log_fn:
    log_fn(f"k-means: {fit.n_iter_} of at most {num_iters} iterations, mean squared distance "
           f"{fit.inertia_ / n:.4f}")
  return np.asarray(fit.cluster_centers_, np.float32)


# -- tokenizer --------------------------------------------------------------------------------
@gin.configurable
class KMeansTokenizer(SpeechTokenizer):
  """Nearest-centroid units of pooled log-mel features -> int32[T, 1] at `rate` Hz."""

  kind = "kmeans"

  def __init__(self, centroids: np.ndarray, rate: float = 25.0, context: int = 0,
               dedup: bool = False, mel: mel_lib.MelConfig | dict | None = None,
               griffin_lim_iters: int = 64, mel_inversion: str = "nnls"):
    self.mel = mel_lib.MelConfig.from_dict(mel) if isinstance(mel, dict) else (
        mel or mel_lib.MelConfig())
    self.rate = float(rate)
    self.unit_hop = _unit_hop(self.mel, self.rate)
    self.context = int(context)
    self.dedup = bool(dedup)
    self.centroids = np.asarray(centroids, np.float32)
    dim = self.mel.n_mels * (2 * self.context + 1)
    if self.centroids.ndim != 2 or self.centroids.shape[1] != dim:
      raise SpeechTokenizerError(
          f"centroids must be [num_units, {dim}] for n_mels={self.mel.n_mels}, "
          f"context={self.context}; got {self.centroids.shape}")
    self.griffin_lim_iters = int(griffin_lim_iters)
    self.mel_inversion = mel_inversion

  @property
  def num_units(self) -> int:
    return int(self.centroids.shape[0])

  @property
  def codebook_sizes(self) -> tuple[int, ...]:
    return (self.num_units,)

  @property
  def frame_rate(self) -> float:
    return self.rate

  @property
  def sample_rate(self) -> int:
    return self.mel.sample_rate

  @property
  def name(self) -> str:
    h = hashlib.sha1(self.centroids.tobytes())
    h.update(repr((self.context, sorted(self.mel.to_dict().items()))).encode())
    dd = "-dedup" if self.dedup else ""
    return f"kmeans-{self.num_units}@{self.rate:g}Hz{dd}-{h.hexdigest()[:12]}"

  def num_frames(self, num_samples: int) -> int:
    if self.dedup:
      raise SpeechTokenizerError("with dedup=True the number of units depends on the audio")
    t_mel = self.mel.num_frames(num_samples)
    return 0 if t_mel == 0 else ((t_mel - 1) * self.mel.hop_length) // self.unit_hop + 1

  def features_batch(self, audios: Sequence[np.ndarray], sample_rate: int) -> list[np.ndarray]:
    """Pooled (and context-stacked) log-mel features float32[T_i, d] of each utterance."""
    mels = mel_lib.log_mel_batch([self.prepare(a, sample_rate) for a in audios], self.mel)
    return [stack_context(pool_frames(m, self.mel.hop_length, self.unit_hop), self.context)
            for m in mels]

  def encode_with_durations(self, audio: np.ndarray, sample_rate: int):
    """-> (deduplicated units int32[T', 1], run lengths int32[T'] in unit frames)."""
    units = self._encode_raw([audio], sample_rate)[0]
    return dedup_units(units)

  def _encode_raw(self, audios, sample_rate) -> list[np.ndarray]:
    feats = self.features_batch(audios, sample_rate)
    if not feats:
      return []
    units = assign(np.concatenate(feats, axis=0), self.centroids)
    return [u[:, None] for u in np.split(units, np.cumsum([f.shape[0] for f in feats])[:-1])]

  def encode_batch(self, audios: Sequence[np.ndarray], sample_rate: int) -> list[np.ndarray]:
    units = self._encode_raw(audios, sample_rate)
    return [dedup_units(u)[0] for u in units] if self.dedup else units

  def decode(self, frames_TK: np.ndarray, run_lengths: Optional[np.ndarray] = None) -> np.ndarray:
    """Units int[T, 1] (with their run lengths if deduplicated) -> float32 audio."""
    units = self.check_frames(frames_TK)[:, 0]
    if run_lengths is not None:
      units = np.repeat(units, np.asarray(run_lengths))
    m = self.mel.n_mels
    unit_mel = self.centroids[:, self.context * m:(self.context + 1) * m]  # centre block [C, M]
    t_mel = -(-units.shape[0] * self.unit_hop // self.mel.hop_length)
    which = (np.arange(t_mel) * self.mel.hop_length) // self.unit_hop
    return mel_lib.mel_to_audio(unit_mel[units[which]], self.mel, n_iter=self.griffin_lim_iters,
                                inversion=self.mel_inversion)

  # -- persistence ----------------------------------------------------------------------------
  def config(self) -> dict:
    return {"rate": self.rate, "context": self.context, "dedup": self.dedup,
            "mel": self.mel.to_dict(), "griffin_lim_iters": self.griffin_lim_iters,
            "mel_inversion": self.mel_inversion, "num_units": self.num_units}

  def save_arrays(self, directory: str) -> None:
    with atomic_path(os.path.join(directory, CENTROIDS_FILENAME)) as tmp:
      with open(tmp, "wb") as f:
        np.savez(f, centroids=self.centroids)

  @classmethod
  def from_saved(cls, config: dict, directory: str) -> "KMeansTokenizer":
    config = dict(config)
    num_units = config.pop("num_units", None)
    path = os.path.join(directory, CENTROIDS_FILENAME)
    if not os.path.exists(path):
      raise FileNotFoundError(f"k-means tokenizer in {directory} lacks {CENTROIDS_FILENAME}")
    with np.load(path) as z:
      centroids = z["centroids"]
    if num_units is not None and centroids.shape[0] != num_units:
      raise SpeechTokenizerError(f"{path} has {centroids.shape[0]} centroids, the spec says "
                                 f"{num_units}")
    return cls(centroids, **config)


def _unit_hop(cfg: mel_lib.MelConfig, rate: float) -> int:
  hop = cfg.sample_rate / rate
  if abs(hop - round(hop)) > 1e-6 or round(hop) < cfg.hop_length:
    raise SpeechTokenizerError(
        f"unit rate {rate} Hz must divide the sample rate {cfg.sample_rate} into a whole hop >= "
        f"the mel hop {cfg.hop_length} (e.g. 12.5, 25, 40, 50, 80 Hz)")
  return int(round(hop))


@gin.configurable
def fit_kmeans_tokenizer(audios: Sequence[np.ndarray], sample_rate: int, num_units: int = 512,
                         rate: float = 25.0, context: int = 0, seed: int = 0,
                         dedup: bool = False, mel: Optional[mel_lib.MelConfig] = None,
                         num_iters: int = 25, max_points: int = 200_000,
                         log_fn: Optional[Callable[[str], None]] = None) -> KMeansTokenizer:
  """Fits k-means units on a corpus (list of mono arrays at `sample_rate`); deterministic in seed."""
  probe = KMeansTokenizer(np.zeros([1, (mel or mel_lib.MelConfig()).n_mels * (2 * context + 1)]),
                          rate=rate, context=context, mel=mel)
  feats = []
  for s in range(0, len(audios), 64):  # bounded memory for large corpora
    feats += probe.features_batch(audios[s:s + 64], sample_rate)
  if log_fn:
    log_fn(f"features: {sum(f.shape[0] for f in feats)} frames of dim {probe.centroids.shape[1]}")
  x = np.concatenate(feats, axis=0) if feats else np.zeros([0, probe.centroids.shape[1]], np.float32)
  centroids = kmeans(x, num_units, seed=seed, num_iters=num_iters, max_points=max_points,
                     log_fn=log_fn)
  return KMeansTokenizer(centroids, rate=rate, context=context, dedup=dedup, mel=probe.mel)
