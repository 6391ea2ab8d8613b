"""The Zipper feature converter: the unified stream -> the text and speech towers' two streams.

The batch keeps its one contract (docs/architecture.md, "The batch"): every template's rows enter
every architecture unchanged, and each architecture converts them where they enter the model (the
shared decoder reads them as they are). For Zipper, a position belongs to the speech tower when its
id is a speech frame or one of the speech-opening specials (`ModelConfig.zipper_speech_specials`,
so the position before a speech span's first frame is the speech tower's and predicts it), else to
the text tower. The two streams stay aligned with the unified row (index i of either stream is
position i of the row), each masked to its tower by segment id 0 elsewhere:

    speech_BL          bool  [B, L]  the position feeds the speech tower
    text_segment_ids   int32 [B, L]  segment_ids at text-tower positions, else 0
    speech_segment_ids int32 [B, L]  segment_ids at speech-tower positions, else 0
    text_positions     int32 [B, L]  index within the document's text stream (0..), rotary + self order
    speech_positions   int32 [B, L]  index within the document's speech stream
    order              int32 [B, L]  the unified position: the cross-attention order of both streams

A tower therefore sees exactly the sequence it would see run alone (its own positions, numbered
from 0 per document), and cross-attention between the streams orders keys and queries by their
place in the interleaved row: a query sees the other stream's keys strictly before it.
"""
from __future__ import annotations

import flax.struct
import jax
import jax.numpy as jnp
import numpy as np


@flax.struct.dataclass
class ZipperStreams:
  speech_BL: jax.Array
  text_segment_ids: jax.Array
  speech_segment_ids: jax.Array
  text_positions: jax.Array
  speech_positions: jax.Array
  order: jax.Array

  def segment_ids(self, tower: str):
    return self.text_segment_ids if tower == "text" else self.speech_segment_ids

  def positions(self, tower: str):
    return self.text_positions if tower == "text" else self.speech_positions


def speech_tower_ids(vocab, speech_specials) -> np.ndarray:
  """The unified ids below the speech range that feed the speech tower."""
  return np.asarray([vocab.special_id(s) for s in speech_specials if s], np.int32)


def is_speech_tower(tokens_BL, vocab, speech_specials):
  """bool[B, L]: the position feeds the speech tower."""
  extra = speech_tower_ids(vocab, speech_specials)
  out = vocab.is_speech(tokens_BL)
  return out | jnp.isin(tokens_BL, jnp.asarray(extra)) if extra.size else out


def _stream_positions(member_BL, positions_BL):
  """Index of each member position among its document's members (documents are contiguous)."""
  m = member_BL.astype(jnp.int32)
  before_BL = jnp.cumsum(m, axis=1) - m                      # members before each position
  start_BL = jnp.arange(m.shape[1])[None] - positions_BL    # first index of each document
  at_start_BL = jnp.take_along_axis(before_BL, jnp.clip(start_BL, 0, m.shape[1] - 1), axis=1)
  return jnp.where(member_BL, before_BL - at_start_BL, 0).astype(jnp.int32)


def zipper_streams(tokens_BL, segment_ids_BL, positions_BL, vocab, speech_specials) -> ZipperStreams:
  """The converter (see the module docstring); pure jnp, runs inside the jitted step."""
  speech_BL = is_speech_tower(tokens_BL, vocab, speech_specials)
  text_BL = ~speech_BL
  return ZipperStreams(
      speech_BL=speech_BL,
      text_segment_ids=jnp.where(text_BL, segment_ids_BL, 0),
      speech_segment_ids=jnp.where(speech_BL, segment_ids_BL, 0),
      text_positions=_stream_positions(text_BL & (segment_ids_BL > 0), positions_BL),
      speech_positions=_stream_positions(speech_BL & (segment_ids_BL > 0), positions_BL),
      order=positions_BL.astype(jnp.int32))
