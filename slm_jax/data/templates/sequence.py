"""Builds one training sequence in the unified vocabulary (docs/data_contract.md section 3).

A template appends *pieces* (specials, text ids, speech frames), each either trained (its
positions are loss targets) or not. `finish()` adds EOS and returns

    tokens        int32[N]        unified ids, BOS ... EOS
    speech_codes  int32[N, K-1]   channels 1..K-1 at speech positions, 0 elsewhere (only if K > 1)
    loss_mask     float32[N]      1 where token i is trained as a target

Stream truncation (`finish(max_length)`): keep the longest prefix of pieces that ends at a cut
point (a word boundary) and fits with its EOS; when no cut point fits, cut inside the last piece
that may be split. A truncated sequence still ends with EOS (the contract), but that EOS is NOT
trained, so the model never learns to stop in mid-utterance.
"""
from __future__ import annotations

import dataclasses

import numpy as np

from slm_jax.data.templates.utterance import SkipExample
from slm_jax.unified_vocab import BOS_ID, EOS_ID, UnifiedVocab


@dataclasses.dataclass
class _Piece:
  ids: np.ndarray       # int32[n] unified ids
  codes: np.ndarray     # int32[n, K-1]
  trained: bool
  cut_after: bool       # a truncation may end right after this piece
  splittable: bool      # a truncation may end inside this piece (content, not a marker)


class SequenceBuilder:
  """Accumulates pieces of one sequence; starts with BOS (never trained)."""

  def __init__(self, vocab: UnifiedVocab):
    self.vocab = vocab
    self._extra = vocab.num_channels - 1
    self._pieces: list[_Piece] = []
    self._append(np.array([BOS_ID], np.int32), None, trained=False, cut_after=False, splittable=False)

  def __len__(self) -> int:
    return sum(p.ids.size for p in self._pieces)

  def _append(self, ids, codes, trained, cut_after, splittable):
    if codes is None:
      codes = np.zeros((ids.size, self._extra), np.int32)
    self._pieces.append(_Piece(ids.astype(np.int32), codes.astype(np.int32), bool(trained),
                               bool(cut_after), bool(splittable)))

  def special(self, name: str, trained: bool = False) -> "SequenceBuilder":
    """A reserved special by name ("[ASR]", "[TEXT]", ...), or no-op when name is None/""."""
    if name:
      self._append(np.array([self.vocab.special_id(name)], np.int32), None, trained, False, False)
    return self

  def text(self, text_ids: np.ndarray, trained: bool, cut_after: bool = False) -> "SequenceBuilder":
    """Text-vocabulary ids (validated and offset into the unified range)."""
    text_ids = np.asarray(text_ids, np.int32).reshape(-1)
    if text_ids.size:
      self._append(self.vocab.text_to_unified(text_ids), None, trained, cut_after, True)
    elif cut_after and self._pieces:
      self._pieces[-1].cut_after = True
    return self

  def speech(self, frames_TK: np.ndarray, trained: bool, cut_after: bool = False) -> "SequenceBuilder":
    """Speech frames int32[T, K]: channel 0 into tokens, channels 1..K-1 into speech_codes."""
    frames_TK = np.asarray(frames_TK, np.int32)
    if frames_TK.ndim != 2 or frames_TK.shape[1] != self.vocab.num_channels:
      raise ValueError(f"speech frames must be int32[T, K={self.vocab.num_channels}] for this "
                       f"UnifiedVocab, got shape {frames_TK.shape}; check that the speech tokenizer "
                       "matches UnifiedVocab.speech_codebook_sizes")
    if frames_TK.shape[0] == 0:
      if cut_after and self._pieces:
        self._pieces[-1].cut_after = True
      return self
    ids = self.vocab.speech_to_unified(frames_TK[:, 0])
    codes = frames_TK[:, 1:]
    sizes_K1 = np.asarray(self.vocab.extra_codebook_sizes, np.int32)
    out_of_range = (codes < 0) | (codes >= sizes_K1)   # one pass over [T, K-1], not K-1 passes
    if out_of_range.any():
      k = int(np.flatnonzero(out_of_range.any(axis=0))[0])
      col, size = codes[:, k], int(sizes_K1[k])
      bad = col[(col < 0) | (col >= size)][:5].tolist()
      raise ValueError(f"speech channel-{k + 1} code out of range [0, {size}): e.g. {bad}; check "
                       "that the speech tokenizer matches the vocabulary spec")
    self._append(ids, codes, trained, cut_after, True)
    return self

  def mark_cut_point(self) -> "SequenceBuilder":
    """Allows truncation right after what was appended so far."""
    self._pieces[-1].cut_after = True
    return self

  # -- output ---------------------------------------------------------------------------------
  def finish(self, max_length: int | None = None, train_eos: bool = True) -> dict[str, np.ndarray]:
    """Appends EOS (trained iff `train_eos` and not truncated) and returns the contract-3 dict.

    Raises SkipExample("too_long") when nothing sensible fits in `max_length`, and
    SkipExample("no_target") when the result has no trained position.
    """
    pieces, truncated = self._pieces, False
    if max_length is not None and len(self) + 1 > max_length:
      pieces, truncated = self._truncate(max_length - 1), True
    ids = np.concatenate([p.ids for p in pieces] + [np.array([EOS_ID], np.int32)])
    codes = np.concatenate([p.codes for p in pieces] + [np.zeros((1, self._extra), np.int32)])
    mask = np.concatenate([np.full(p.ids.size, float(p.trained), np.float32) for p in pieces] +
                          [np.array([float(train_eos and not truncated)], np.float32)])
    if not mask.any():
      raise SkipExample("no_target", "the sequence has no trained position")
    out = {"tokens": ids, "loss_mask": mask}
    if self._extra:
      out["speech_codes"] = codes
    return out

  def _truncate(self, budget: int) -> list[_Piece]:
    """Longest prefix of pieces of total length <= budget, ending at a cut point if possible."""
    total, best, last_fit = 0, None, 0
    for i, p in enumerate(self._pieces):
      if total + p.ids.size > budget:
        break
      total += p.ids.size
      last_fit = i + 1
      if p.cut_after:
        best = i + 1
    if best is not None and any(p.trained for p in self._pieces[:best]):
      return self._pieces[:best]
    # No word boundary fits: cut inside the first piece that overflows, if it is content.
    if last_fit < len(self._pieces) and self._pieces[last_fit].splittable:
      p, room = self._pieces[last_fit], budget - total
      if room > 0:
        return self._pieces[:last_fit] + [dataclasses.replace(p, ids=p.ids[:room], codes=p.codes[:room])]
    raise SkipExample("too_long", f"{len(self)} tokens do not fit in max_length={budget + 1} at any "
                      "cut point")
