"""A tokenized utterance (docs/data_contract.md section 2) as numpy arrays, with word-level views.

Templates read utterances through this class so that the word <-> text ids <-> speech frames
alignment lives in one place.
"""
from __future__ import annotations

import dataclasses
from typing import Mapping

import numpy as np


class SkipExample(Exception):
  """A template cannot build a trainable example from this input (counted, or raised by policy).

  `reason` is a short stable key (e.g. "empty_transcript") used by the skip counters.
  """

  def __init__(self, reason: str, detail: str = ""):
    super().__init__(f"{reason}: {detail}" if detail else reason)
    self.reason = reason
    self.detail = detail


@dataclasses.dataclass(frozen=True)
class Utterance:
  """One tokenized utterance.

  Attributes:
    word_text_ids: int32[N] text-vocabulary ids (not unified) of all words, concatenated.
    word_text_lens: int32[W] number of ids of each word (sum == N).
    speech_frames: int32[T, K] speech tokens (T may be 0 for text-only data).
    word_frame_spans: int32[W, 2] [start, end) frame of each word, or int32[0, 2] when the
      utterance has no word timings (then word-aligned templates skip it).
  """
  word_text_ids: np.ndarray
  word_text_lens: np.ndarray
  speech_frames: np.ndarray
  word_frame_spans: np.ndarray

  @classmethod
  def from_features(cls, ex: Mapping[str, np.ndarray], num_channels: int) -> "Utterance":
    """Builds an utterance from a dict of contract-2 features; missing speech means text-only."""
    ids = np.asarray(ex["word_text_ids"], np.int32).reshape(-1)
    lens = np.asarray(ex.get("word_text_lens", [ids.size] if ids.size else []), np.int32).reshape(-1)
    frames = np.asarray(ex.get("speech_frames", np.zeros((0, num_channels))), np.int32)
    if frames.ndim == 1:
      frames = frames[:, None]
    spans = np.asarray(ex.get("word_frame_spans", np.zeros((0, 2))), np.int32).reshape(-1, 2)
    return cls(ids, lens, frames, spans)

  def __post_init__(self):
    if int(self.word_text_lens.sum()) != self.word_text_ids.size:
      raise ValueError(f"word_text_lens sum to {int(self.word_text_lens.sum())} but there are "
                       f"{self.word_text_ids.size} word_text_ids; the tokenizer must encode words "
                       "one at a time (docs/data_contract.md section 2)")
    if (self.word_text_lens < 0).any():
      raise ValueError(f"negative word_text_lens {self.word_text_lens.tolist()}")
    if self.speech_frames.ndim != 2:
      raise ValueError(f"speech_frames must be int32[T, K], got shape {self.speech_frames.shape}")
    spans = self.word_frame_spans
    if spans.shape[0]:
      if spans.shape[0] != self.num_words:
        raise ValueError(f"word_frame_spans has {spans.shape[0]} rows for {self.num_words} words")
      if (spans[:, 0] < 0).any() or (spans[:, 1] < spans[:, 0]).any() or (
          spans[:, 1] > self.num_frames).any():
        raise ValueError(f"word_frame_spans must satisfy 0 <= start <= end <= T={self.num_frames}; "
                         f"got {spans.tolist()[:8]}")
      if (spans[1:, 0] < spans[:-1, 0]).any():
        raise ValueError(f"word_frame_spans must be in time order; got {spans.tolist()[:8]}")

  # -- sizes ----------------------------------------------------------------------------------
  @property
  def num_words(self) -> int:
    return int(self.word_text_lens.size)

  @property
  def num_frames(self) -> int:
    return int(self.speech_frames.shape[0])

  @property
  def aligned(self) -> bool:
    """True when every word has a frame span (word timings were available)."""
    return self.num_words > 0 and self.word_frame_spans.shape[0] == self.num_words

  @property
  def has_text(self) -> bool:
    return self.word_text_ids.size > 0

  @property
  def has_speech(self) -> bool:
    return self.num_frames > 0

  # -- word-level views -----------------------------------------------------------------------
  def text_ids(self, start: int = 0, end: int | None = None) -> np.ndarray:
    """Text ids of words [start, end)."""
    offsets = np.concatenate([[0], np.cumsum(self.word_text_lens)])
    end = self.num_words if end is None else end
    return self.word_text_ids[offsets[start]:offsets[end]]

  def word_frames(self, start: int, end: int) -> np.ndarray:
    """Frames from the first frame of word `start` to the last frame of word `end - 1`."""
    self.require_alignment()
    return self.speech_frames[self.word_frame_spans[start, 0]:self.word_frame_spans[end - 1, 1]]

  def boundary_tiles(self) -> np.ndarray:
    """int32[W + 1] frame bounds that tile the audio by word: word w owns frames
    [bounds[w], bounds[w + 1]), cut at the boundary point between words (the middle of the pause
    between word w-1's end and word w's start); bounds[0] = 0 and bounds[W] = T, so leading and
    trailing silence go to the first and last word (as when cutting a recording by word timings).
    A word may own no frame when the timings overlap or round to one frame."""
    self.require_alignment()
    s, e = self.word_frame_spans[:, 0], self.word_frame_spans[:, 1]
    mid = (e[:-1] + s[1:] + 1) // 2  # boundary between word w-1 and w, inside the pause
    starts = np.maximum.accumulate(np.concatenate([[0], mid]))  # ordered even if timings overlap
    return np.concatenate([starts, [self.num_frames]]).astype(np.int32)

  def require_alignment(self) -> None:
    if not self.aligned:
      raise SkipExample("no_alignment", "the template needs word timings (word_frame_spans)")

  def prefix(self, k: int) -> "Utterance":
    """The first k words: their text ids and the speech up to the end of word k-1."""
    self.require_alignment()
    offsets = np.concatenate([[0], np.cumsum(self.word_text_lens)])
    last_frame = int(self.word_frame_spans[k - 1, 1])
    return Utterance(self.word_text_ids[:offsets[k]], self.word_text_lens[:k],
                     self.speech_frames[:last_frame], self.word_frame_spans[:k])
