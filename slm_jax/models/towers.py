"""Embedding towers over the unified vocabulary (docs/architecture.md).

* `TokenEmbedding`: one table over all unified ids (specials, text, speech channel 0).
* `SpeechChannelEmbedding`: per-channel tables for speech channels 1..K-1, summed into the width.
* `ModalityTowers`: the text tower (text + specials) and speech tower, each with an optional small
  stack of decoder layers that sees only its own modality's positions (causally, within each
  document) before the shared decoder.
"""
from __future__ import annotations

import jax.numpy as jnp
import numpy as np
from flax import nnx

from slm_jax.models.config import ModelConfig
from slm_jax.models.kv_cache import KVCache
from slm_jax.models.layers import param
from slm_jax.models.stack import BlockStack
from slm_jax.sharding import constrain

# Above this many extra channels, channel embeddings are summed by a multi-hot matmul
# (e.g. dMel's 79 extra channels x 16 levels) instead of a gather of [B, L, K-1, D].
_MULTIHOT_MIN_CHANNELS = 16


class TokenEmbedding(nnx.Module):
  def __init__(self, cfg: ModelConfig, *, rngs: nnx.Rngs):
    self.dtype = cfg.jnp_dtype
    self.table = param(rngs, (cfg.padded_vocab_size, cfg.embed_dim), ("vocab", "embed"),
                       cfg.jnp_param_dtype, std=cfg.init_std)

  def __call__(self, ids_BL):
    return jnp.take(self.table[...], ids_BL, axis=0).astype(self.dtype)

  def attend(self, x_BLD):
    """Tied output projection: x @ table.T -> [B, L, V_padded]."""
    return jnp.einsum("...d,vd->...v", x_BLD, self.table[...].astype(x_BLD.dtype))


class SpeechChannelEmbedding(nnx.Module):
  """Embeds speech channels 1..K-1; their sizes may differ (offsets into one flat table).

  Full (`ModelConfig.speech_embed_rank = 0`): a D-wide row per code of every channel, summed.
  Factorized (rank R > 0): an R-vector per code, the channels' vectors concatenated and projected
  to D; the same function class when R >= D, and for many channels of ordered levels (dMel) much
  cheaper: the full form is a [B x L, (K-1) x C] one-hot matmul forward and backward.
  """

  def __init__(self, cfg: ModelConfig, *, rngs: nnx.Rngs):
    sizes = cfg.vocab.extra_codebook_sizes
    self.dtype = cfg.jnp_dtype
    self.offsets = tuple(int(o) for o in np.concatenate([[0], np.cumsum(sizes)[:-1]]))
    self.total = int(sum(sizes))
    self.max_codebook = int(max(sizes)) if sizes else 0
    self.sizes = tuple(int(c) for c in sizes)
    self.rank = int(cfg.speech_embed_rank)
    if self.rank:
      # Factorized: each code -> `rank` features ([N, R]), all channels' features -> the width
      # ([(K-1) x R, D]): a gather and one small matmul instead of the one-hot contraction below.
      n_channels = len(sizes)
      self.features = param(rngs, (self.total, self.rank), ("codebook", None),
                            cfg.jnp_param_dtype, std=1.0)
      self.projection = param(rngs, (n_channels * self.rank, cfg.embed_dim), ("channels", "embed"),
                              cfg.jnp_param_dtype, std=cfg.init_std / np.sqrt(self.rank))
    else:
      self.table = param(rngs, (self.total, cfg.embed_dim), ("codebook", "embed"),
                         cfg.jnp_param_dtype, std=cfg.init_std)

  def __call__(self, codes_BLK):
    """codes [B, L, K-1] (channels 1..K-1) -> the sum of their embeddings [B, L, D]."""
    if self.rank:
      flat_BLK = codes_BLK + jnp.asarray(self.offsets, jnp.int32)
      features_BLKR = jnp.take(self.features[...].astype(self.dtype), flat_BLK, axis=0)
      features_BLN = features_BLKR.reshape(*codes_BLK.shape[:-1], -1)   # N = (K-1) x R
      return features_BLN @ self.projection[...].astype(self.dtype)
    table_ND = self.table[...].astype(self.dtype)          # N = all extra channels' codes
    if codes_BLK.shape[-1] >= _MULTIHOT_MIN_CHANNELS:
      # One-hot per channel against its own codebook ([B, L, K-1, C_max], not against all N
      # codes), contracted with the table laid out per channel [K-1, C_max, D] in one matmul.
      c_KC = np.arange(self.max_codebook)[None, :]
      valid_KC = c_KC < np.asarray(self.sizes)[:, None]                 # static
      rows_KC = (np.asarray(self.offsets)[:, None] + c_KC) * valid_KC    # flat row of (k, c)
      onehot_BLKC = (codes_BLK[..., None] == jnp.arange(self.max_codebook)).astype(self.dtype)
      table_KCD = jnp.where(valid_KC[..., None], table_ND[rows_KC], 0)
      return jnp.einsum("blkc,kcd->bld", onehot_BLKC, table_KCD)
    flat_BLK = codes_BLK + jnp.asarray(self.offsets, jnp.int32)
    return jnp.take(table_ND, flat_BLK, axis=0).sum(-2)


class ModalityTowers(nnx.Module):
  """tokens (+ speech_codes) -> x[B, L, D] entering the shared decoder."""

  def __init__(self, cfg: ModelConfig, *, rngs: nnx.Rngs):
    self.cfg = cfg
    self.embed = TokenEmbedding(cfg, rngs=rngs)
    self.speech_channels = SpeechChannelEmbedding(cfg, rngs=rngs) if cfg.num_channels > 1 else None
    self.text_layers = BlockStack(cfg, cfg.text_tower_layers, rngs=rngs)
    self.speech_layers = BlockStack(cfg, cfg.speech_tower_layers, rngs=rngs)

  def __call__(self, tokens_BL, segment_ids_BL, positions_BL, speech_codes_BLK=None,
               cache: KVCache | None = None, empty: bool = False, dropped_BL=None):
    """-> x [B, L, D]; with `cache` (generation: slots as before this call; `empty` when none is
    written yet) -> (x, cache with the towers' new keys and values written).

    dropped_BL: bool[B, L] or None; True positions enter as zero vectors (training only: the
    speech-history dropout of `models/loss.py`)."""
    vocab = self.cfg.vocab
    is_speech_BL = vocab.is_speech(tokens_BL)
    x_BLD = self.embed(tokens_BL)
    if self.speech_channels is not None:
      if speech_codes_BLK is None:
        raise ValueError(f"this model has K={vocab.num_channels} speech channels: the batch needs "
                         f"speech_codes [B, L, {vocab.num_channels - 1}]")
      extra_BLD = self.speech_channels(speech_codes_BLK)
      x_BLD = x_BLD + jnp.where(is_speech_BL[..., None], extra_BLD, 0)
    if dropped_BL is not None:
      x_BLD = jnp.where(dropped_BL[..., None], 0, x_BLD)
    x_BLD = constrain(x_BLD, ("batch", "length", "act_embed"))
    if not (self.text_layers.num_layers or self.speech_layers.num_layers):
      return x_BLD if cache is None else (x_BLD, cache)
    text_segments_BL = jnp.where(is_speech_BL, 0, segment_ids_BL)
    speech_segments_BL = jnp.where(is_speech_BL, segment_ids_BL, 0)
    if cache is None:
      text_x = self.text_layers(x_BLD, text_segments_BL, positions_BL)
      speech_x = self.speech_layers(x_BLD, speech_segments_BL, positions_BL)
      return jnp.where(is_speech_BL[..., None], speech_x, text_x)
    stacks = dict(cache.stacks)
    text_x, speech_x = x_BLD, x_BLD
    if self.text_layers.num_layers:   # each tower sees only the cache slots of its own modality
      text_x, stacks["text_tower"] = self.text_layers.forward_cached(
          x_BLD, text_segments_BL, positions_BL, cache.stacks["text_tower"],
          jnp.where(cache.is_speech_BS, 0, cache.segment_ids_BS), cache.order_BS, empty)
    if self.speech_layers.num_layers:
      speech_x, stacks["speech_tower"] = self.speech_layers.forward_cached(
          x_BLD, speech_segments_BL, positions_BL, cache.stacks["speech_tower"],
          jnp.where(cache.is_speech_BS, cache.segment_ids_BS, 0), cache.order_BS, empty)
    return jnp.where(is_speech_BL[..., None], speech_x, text_x), cache.replace(stacks=stacks)
