"""Precomputed units from an external tokenizer (HuBERT k-means, Mimi RVQ, GLM-4-Voice, ...).

The units were made elsewhere; slm_jax reads them with a declared spec (name, K, codebook sizes,
frame rate) and validates every array on read: shape [T, K] (or [T] when K == 1), integer dtype,
each channel within its codebook. A bad file is an error naming the file and the bad value.

Storage: one `<utterance id>.npy` per utterance under `root`, or ArrayRecord files whose records
are `.npy` bytes (np.save), optionally keyed by an id in a side list.
"""
from __future__ import annotations

import io
import os
from typing import Iterator, Optional, Sequence

import gin
import numpy as np

from slm_jax.data.speech.base import SpeechTokenizer, SpeechTokenizerError, validate_frames


@gin.configurable
class PrecomputedUnits(SpeechTokenizer):
  """Reads externally computed units; `encode` from audio is not possible.

  Args:
    source_name: identity of the external tokenizer, e.g. "hubert-base-l9-km500" or "mimi-8".
    codebook_sizes: K codebook sizes, e.g. (500,) or (2048,) * 8.
    frame_rate: frames per second of the units (HuBERT 50, Mimi 12.5, GLM-4-Voice 12.5).
    sample_rate: sample rate of the audio the units describe.
    root: directory holding `<id>.npy` files (for `lookup`).
  """

  kind = "precomputed"

  def __init__(self, source_name: str, codebook_sizes: Sequence[int], frame_rate: float,
               sample_rate: int = 16000, root: Optional[str] = None):
    if not source_name:
      raise SpeechTokenizerError("precomputed units need a source_name naming the external tokenizer")
    self.source_name = source_name
    self._codebook_sizes = tuple(int(c) for c in codebook_sizes)
    if not self._codebook_sizes or min(self._codebook_sizes) < 1:
      raise SpeechTokenizerError(f"codebook_sizes must list K >= 1 sizes >= 1, got {codebook_sizes}")
    self._frame_rate = float(frame_rate)
    self._sample_rate = int(sample_rate)
    self.root = root

  @property
  def codebook_sizes(self) -> tuple[int, ...]:
    return self._codebook_sizes

  @property
  def frame_rate(self) -> float:
    return self._frame_rate

  @property
  def sample_rate(self) -> int:
    return self._sample_rate

  @property
  def can_decode(self) -> bool:
    return False

  @property
  def name(self) -> str:
    sizes = "x".join(str(c) for c in self._codebook_sizes)
    return f"precomputed:{self.source_name}:{sizes}@{self._frame_rate:g}Hz"

  def encode_batch(self, audios, sample_rate):
    raise NotImplementedError(
        f"{self.name}: units are precomputed by an external tokenizer and read, not computed from "
        "audio; use read(path), lookup(utterance_id) or read_array_record(path)")

  # -- reading --------------------------------------------------------------------------------
  def validate(self, units, what: str) -> np.ndarray:
    """Checks an array against the spec -> int32[T, K]; errors name `what`."""
    return validate_frames(units, self._codebook_sizes, what=f"{what} ({self.name})")

  def read(self, path: str) -> np.ndarray:
    """Reads and validates one .npy file -> int32[T, K]."""
    if not os.path.exists(path):
      raise FileNotFoundError(f"precomputed units file {path!r} does not exist")
    try:
      units = np.load(path, allow_pickle=False)
    except (ValueError, OSError, EOFError) as e:
      raise SpeechTokenizerError(f"{path}: not a readable .npy array of units: {e}") from e
    return self.validate(units, path)

  def lookup(self, utterance_id: str) -> np.ndarray:
    """Reads `<root>/<utterance_id>.npy`."""
    if not self.root:
      raise SpeechTokenizerError(f"{self.name}: lookup needs `root`, the directory of <id>.npy files")
    return self.read(os.path.join(self.root, f"{utterance_id}.npy"))

  def read_array_record(self, path: str) -> Iterator[np.ndarray]:
    """Yields validated int32[T, K] arrays from an ArrayRecord file of np.save records."""
    from array_record.python.array_record_module import ArrayRecordReader  # pylint: disable=import-outside-toplevel
    if not os.path.exists(path):
      raise FileNotFoundError(f"ArrayRecord file {path!r} does not exist")
    reader = ArrayRecordReader(path)
    try:
      for i in range(reader.num_records()):
        yield self.validate(_npy_from_bytes(reader.read([i])[0], f"{path}[{i}]"), f"{path}[{i}]")
    finally:
      reader.close()

  # -- persistence ----------------------------------------------------------------------------
  def config(self) -> dict:
    return {"source_name": self.source_name, "codebook_sizes": list(self._codebook_sizes),
            "frame_rate": self._frame_rate, "sample_rate": self._sample_rate, "root": self.root}


def write_array_record(path: str, arrays: Sequence[np.ndarray]) -> str:
  """Writes unit arrays as np.save records into one ArrayRecord file (for tests and converters)."""
  from array_record.python.array_record_module import ArrayRecordWriter  # pylint: disable=import-outside-toplevel
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  writer = ArrayRecordWriter(path, "group_size:1")
  for a in arrays:
    buf = io.BytesIO()
    np.save(buf, np.asarray(a), allow_pickle=False)
    writer.write(buf.getvalue())
  writer.close()
  return path


def _npy_from_bytes(data: bytes, what: str) -> np.ndarray:
  try:
    return np.load(io.BytesIO(data), allow_pickle=False)
  except (ValueError, OSError, EOFError) as e:
    raise SpeechTokenizerError(f"{what}: record is not an np.save array of units: {e}") from e
