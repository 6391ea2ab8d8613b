"""Log-likelihood of chosen positions of unified-token sequences under a model.

A sequence's score is the sum, over its scored positions, of log p(token | everything before)
from the unified head, plus, at speech positions with K > 1 channels, the log-probabilities of
channels 1..K-1 from their heads (the model's whole factorization of a frame). Sequences are
padded to power-of-two lengths and run in batches, one forward pass each (no KV cache).
"""
from __future__ import annotations

import dataclasses
from typing import Optional, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from slm_jax.models.heads import predicted_frame


@dataclasses.dataclass(frozen=True)
class ScoredSequence:
  tokens: np.ndarray              # int32[N] unified ids, BOS first
  codes: Optional[np.ndarray]     # int32[N, K-1] extra speech channels (None when K == 1)
  scored: np.ndarray              # bool[N]: the positions whose token counts (never position 0)


class LikelihoodScorer:
  """log p of scored positions; jit-compiled once per (batch, length bucket)."""

  def __init__(self, model, batch_size: int = 16):
    self.graphdef, self.params = nnx.split(model)
    self.vocab = model.cfg.vocab
    self.k_extra = self.vocab.num_channels - 1
    self.batch_size = batch_size
    self._fn = jax.jit(self._token_logp)

  def _token_logp(self, params, tokens_BL, codes_BLK, segment_ids_BL, positions_BL):
    """float32[B, L]: log p of token l given tokens < l (column 0 is 0)."""
    model = nnx.merge(self.graphdef, params)
    hidden_BLD = model(tokens_BL, segment_ids_BL, positions_BL,
                       codes_BLK if self.k_extra else None)
    h_BLD = hidden_BLD[:, :-1]
    logp_BLV = jax.nn.log_softmax(model.heads.logits(h_BLD), axis=-1)
    target_BL = tokens_BL[:, 1:]
    lp_BL = jnp.take_along_axis(logp_BLV, target_BL[..., None], axis=-1)[..., 0]
    if self.k_extra:
      frame_BLK = predicted_frame(self.vocab, target_BL, codes_BLK[:, 1:])
      ch_logp_BLKC = jax.nn.log_softmax(model.heads.channel_logits(h_BLD, frame_BLK), axis=-1)
      ch_BLK = jnp.take_along_axis(ch_logp_BLKC, codes_BLK[:, 1:, :, None], axis=-1)[..., 0]
      lp_BL = lp_BL + jnp.where(self.vocab.is_speech(target_BL), ch_BLK.sum(-1), 0.0)
    return jnp.pad(lp_BL, ((0, 0), (1, 0)))

  def score(self, sequences: Sequence[ScoredSequence], progress=None) -> np.ndarray:
    """float64[N, 2]: (summed log-likelihood, number of scored positions) per sequence."""
    out = np.zeros((len(sequences), 2), np.float64)
    order = sorted(range(len(sequences)), key=lambda i: sequences[i].tokens.size)
    for start in range(0, len(order), self.batch_size):
      idx = order[start:start + self.batch_size]
      longest = max(sequences[i].tokens.size for i in idx)
      length = max(16, 1 << (longest - 1).bit_length())
      b = self.batch_size
      tokens = np.zeros((b, length), np.int32)
      codes = np.zeros((b, length, max(self.k_extra, 0)), np.int32)
      segments = np.zeros((b, length), np.int32)
      mask = np.zeros((b, length), bool)
      for row, i in enumerate(idx):
        s = sequences[i]
        n = s.tokens.size
        tokens[row, :n], segments[row, :n], mask[row, :n] = s.tokens, 1, s.scored
        if self.k_extra and s.codes is not None:
          codes[row, :n] = s.codes
      positions = np.broadcast_to(np.arange(length, dtype=np.int32), (b, length))
      lp = np.asarray(self._fn(self.params, tokens, codes, segments, positions), np.float64)
      for row, i in enumerate(idx):
        out[i] = ((lp[row] * mask[row]).sum(), mask[row].sum())
      if progress is not None:
        progress.update(len(idx))
    return out
