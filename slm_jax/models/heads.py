"""Output heads: logits over the unified vocabulary and K-1 parallel speech-channel heads."""
from __future__ import annotations

import jax.numpy as jnp
import numpy as np
from flax import nnx

from slm_jax.models.config import ModelConfig
from slm_jax.models.layers import param
from slm_jax.models.towers import TokenEmbedding

NEG_INF = -1e30  # finite, so masked logits never produce NaN in (logit - lse)


class OutputHeads(nnx.Module):
  def __init__(self, cfg: ModelConfig, embed: TokenEmbedding, *, rngs: nnx.Rngs):
    self.cfg = cfg
    self.dtype = cfg.jnp_dtype
    # Tied heads read the embedding table through `embed` (shared, not copied).
    self.tied_embed = embed if cfg.tie_embeddings else None
    self.kernel = None if cfg.tie_embeddings else param(
        rngs, (cfg.embed_dim, cfg.padded_vocab_size), ("embed", "vocab"), cfg.jnp_param_dtype,
        std=cfg.init_std)
    extra = cfg.vocab.extra_codebook_sizes
    self.max_codebook = max(extra) if extra else 0
    self.channel_kernel = param(rngs, (cfg.embed_dim, len(extra), self.max_codebook),
                                ("embed", "channels", "codebook"), cfg.jnp_param_dtype,
                                std=cfg.init_std) if extra else None
    # models/ctc.py: a blank (class 0) + text ids or characters, `ctc_upsample` outputs per
    # position, from the hidden states at speech frames: [D, U * C].
    self.ctc_kernel = param(rngs, (cfg.embed_dim, cfg.ctc_upsample * cfg.ctc_classes),
                            ("embed", None), cfg.jnp_param_dtype,
                            std=cfg.init_std) if cfg.asr_ctc else None

  def logits(self, x_ND):
    """x[..., D] -> float32 logits [..., V_padded]; padding ids get NEG_INF."""
    if self.tied_embed is not None:
      out = self.tied_embed.attend(x_ND.astype(self.dtype))
    else:
      out = jnp.einsum("...d,dv->...v", x_ND.astype(self.dtype), self.kernel[...].astype(self.dtype))
    out = out.astype(jnp.float32)
    pad_mask = jnp.arange(self.cfg.padded_vocab_size) >= self.cfg.vocab.size
    return jnp.where(pad_mask, NEG_INF, out)

  def ctc_logits(self, x_ND):
    """x[..., D] -> float32 CTC logits [..., U, C]: U = ctc_upsample outputs per position, in
    time order; C = ctc_classes (class 0 = blank)."""
    if self.ctc_kernel is None:
      raise ValueError("this model has no CTC head: set ModelConfig.asr_ctc = True")
    out = jnp.einsum("...d,dc->...c", x_ND.astype(self.dtype),
                     self.ctc_kernel[...].astype(self.dtype)).astype(jnp.float32)
    return out.reshape(out.shape[:-1] + (self.cfg.ctc_upsample, self.cfg.ctc_classes))

  def channel_logits(self, x_ND):
    """x[..., D] -> float32 logits [..., K-1, C_max] for speech channels 1..K-1 (None if K == 1)."""
    if self.channel_kernel is None:
      return None
    out = jnp.einsum("...d,dkc->...kc", x_ND.astype(self.dtype),
                     self.channel_kernel[...].astype(self.dtype)).astype(jnp.float32)
    extra = np.asarray(self.cfg.vocab.extra_codebook_sizes)
    valid_KC = np.arange(self.max_codebook)[None, :] < extra[:, None]   # static: codebook sizes differ
    return jnp.where(valid_KC, out, NEG_INF)
