"""The shared-decoder speech-text LM: towers -> decoder stack -> final norm -> heads."""
from __future__ import annotations

import jax.numpy as jnp
from flax import nnx

from slm_jax.models import kv_cache
from slm_jax.models.attention_order import attention_order
from slm_jax.models.config import ModelConfig
from slm_jax.models.kv_cache import KVCache
from slm_jax.models.heads import OutputHeads, predicted_frame
from slm_jax.models.layers import RMSNorm
from slm_jax.models.stack import BlockStack
from slm_jax.models.towers import ModalityTowers
from slm_jax.sharding import constrain


class SpeechTextLM(nnx.Module):
  """Decoder-only LM over the unified token stream (docs/architecture.md).

  `__call__` returns the final hidden states; `heads` turns them into logits (the loss does so in
  chunks, so full float32 logits for the batch are never materialized at once).
  """

  def __init__(self, cfg: ModelConfig, *, rngs: nnx.Rngs):
    self.cfg = cfg
    self.towers = ModalityTowers(cfg, rngs=rngs)
    self.decoder = BlockStack(cfg, cfg.num_layers, rngs=rngs)
    self.final_norm = RMSNorm(cfg.embed_dim, eps=cfg.norm_eps, dtype=cfg.jnp_dtype,
                              param_dtype=cfg.jnp_param_dtype, rngs=rngs)
    self.heads = OutputHeads(cfg, self.towers.embed, rngs=rngs)

  def __call__(self, tokens, segment_ids, positions, speech_codes=None, dropped_BL=None):
    """tokens, segment_ids, positions: int32[B, L]; speech_codes: int32[B, L, K-1] -> [B, L, D].
    dropped_BL: bool[B, L] positions whose input is hidden (zeroed; training only)."""
    x_BLD = self.towers(tokens, segment_ids, positions, speech_codes, dropped_BL=dropped_BL)
    x_BLD = self.decoder(x_BLD, segment_ids, positions, self._order(tokens, segment_ids, positions))
    return constrain(self.final_norm(x_BLD), ("batch", "length", "act_embed"))

  def forward_cached(self, tokens, segment_ids, positions, speech_codes, cache: KVCache,
                     empty: bool = False):
    """Generation: the L new positions (contiguous positions per row; a whole prompt or one
    token) attend the cache slots written before and each other, then are written into `cache`
    at their positions. `empty` (static): the cache holds nothing yet (a fresh prefill).
    Returns (final hidden states [B, L, D], updated cache)."""
    x_BLD, cache = self.towers(tokens, segment_ids, positions, speech_codes, cache, empty)
    x_BLD, decoder_cache = self.decoder.forward_cached(
        x_BLD, segment_ids, positions, cache.stacks["decoder"], cache.segment_ids_BS,
        cache.order_BS, empty, self._order(tokens, segment_ids, positions))
    cache = cache.replace(stacks={**cache.stacks, "decoder": decoder_cache})
    cache = kv_cache.write_slots(cache, segment_ids, positions, self.cfg.vocab.is_speech(tokens))
    return constrain(self.final_norm(x_BLD), ("batch", "length", "act_embed")), cache

  def _order(self, tokens, segment_ids, positions):
    """The decoder's attention order; None (causal by position) without bidirectional tags."""
    tags = self.cfg.bidirectional_speech_tags
    return attention_order(tokens, segment_ids, positions, self.cfg.vocab, tags) if tags else None

  def logits(self, tokens, segment_ids, positions, speech_codes=None):
    """Full logits (for tests, evaluation and generation): ([B, L, V], [B, L, K-1, C] | None).

    A sequential speech read-out (`ModelConfig.speech_readout_frames` > 1) is teacher-forced on
    the sequence's own next frames (the last position on level 0)."""
    h_BLD = self(tokens, segment_ids, positions, speech_codes)
    frame_BLK = None
    if self.cfg.speech_readout_frames > 1 and speech_codes is not None:
      frame_BLK = jnp.pad(predicted_frame(self.cfg.vocab, tokens[:, 1:], speech_codes[:, 1:]),
                          ((0, 0), (0, 1), (0, 0)))
    return self.heads.logits(h_BLD), self.heads.channel_logits(h_BLD, frame_BLK)

