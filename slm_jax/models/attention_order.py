"""The self-attention order of a row: positions, except speech that a task only reads.

Under the (segment, order) contract a query sees the keys of its segment whose order is at most
its own. With `positions` as order every position sees only its past: right for what a model
writes, a handicap for speech it is given whole, such as an ASR prompt, where each frame's hidden
state could use the frames after it too (as an encoder's do). For segments tagged with one of
`ModelConfig.bidirectional_speech_tags`, every maximal run of speech positions takes the order of
its last position: the run attends to itself bidirectionally, everything before it as usual, and
what follows (the transcript) sees all of it. Rotary embeddings still use the true positions.

Generation computes the same orders for the prompt it prefills, so a tagged prompt's speech must
be prefilled in one call (the engine does); later queries have larger orders than every slot.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp


def attention_order(tokens_BL, segment_ids_BL, positions_BL, vocab, tags) -> jax.Array:
  """int32[B, L] orders for self-attention (module docstring); `positions_BL` if no tags."""
  if not tags:
    return positions_BL
  l = tokens_BL.shape[1]
  idx_BL = jnp.broadcast_to(jnp.arange(l, dtype=jnp.int32), tokens_BL.shape)
  prev_seg_BL = jnp.pad(segment_ids_BL[:, :-1], ((0, 0), (1, 0)), constant_values=-1)
  starts_BL = segment_ids_BL != prev_seg_BL
  seg_start_BL = jax.lax.cummax(jnp.where(starts_BL, idx_BL, 0), axis=1)
  tag_ids = jnp.asarray([vocab.special_id(t) for t in tags], tokens_BL.dtype)
  is_tag_BL = jnp.isin(tokens_BL, tag_ids)
  last_tag_BL = jax.lax.cummax(jnp.where(is_tag_BL, idx_BL, -1), axis=1)
  tagged_BL = (last_tag_BL >= seg_start_BL) & (segment_ids_BL > 0)
  speech_BL = vocab.is_speech(tokens_BL) & tagged_BL
  next_speech_BL = jnp.pad(speech_BL[:, 1:], ((0, 0), (0, 1)))
  next_same_BL = jnp.pad(segment_ids_BL[:, 1:] == segment_ids_BL[:, :-1], ((0, 0), (0, 1)))
  run_end_BL = speech_BL & ~(next_speech_BL & next_same_BL)
  end_idx_BL = jax.lax.cummin(jnp.where(run_end_BL, idx_BL, l), axis=1, reverse=True)
  return jnp.where(speech_BL, positions_BL + (end_idx_BL - idx_BL), positions_BL).astype(
      positions_BL.dtype)
