"""Output heads: logits over the unified vocabulary, K-1 speech-channel heads, a CTC head.

Speech channels 1..K-1 are read from the hidden state that predicts a speech position, all at once
(`ModelConfig.speech_readout_frames = 1`) or frame after frame (F > 1: the K channels are F frames
of M = K / F bins, frame-major, as dMel stacks them; frame j's logits add a term from the levels of
frame j - 1, so a position's later frames can follow what its earlier ones chose instead of
averaging over where in the position the sound changes).
"""
from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from slm_jax.models.config import ModelConfig
from slm_jax.models.layers import param
from slm_jax.models.towers import TokenEmbedding

NEG_INF = -1e30  # finite, so masked logits never produce NaN in (logit - lse)


def predicted_frame(vocab, target_ids, target_codes):
  """int32[..., K]: the speech frame a position predicts (channel 0's level from its target id,
  then channels 1..K-1), what a sequential read-out is teacher-forced on; non-speech targets
  give an out-of-range channel 0, which adds nothing."""
  return jnp.concatenate([(target_ids - vocab.speech_start)[..., None], target_codes], axis=-1)


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
    # Sequential read-out: one vector per (bin, level) of the previous frame, summed over its M
    # bins, then read by the channel kernel of the next frame: [M, C, D].
    self.readout_frames = cfg.speech_readout_frames
    self.frame_context = param(
        rngs, (cfg.vocab.num_channels // self.readout_frames, self.max_codebook, cfg.embed_dim),
        ("channels", "codebook", "embed"), cfg.jnp_param_dtype,
        std=cfg.init_std) if extra and self.readout_frames > 1 else None
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

  def channel_logits(self, x_ND, frame_NK=None):
    """x[..., D] -> float32 logits [..., K-1, C_max] for speech channels 1..K-1 (None if K == 1).

    Under sequential read-out, `frame_NK` int[..., K] is the frame being predicted, all K channels
    (channel 0's level included): frame j's logits are conditioned on its frame j - 1 (teacher
    forcing; generation chooses frame by frame with `choose_channels`).
    """
    if self.channel_kernel is None:
      return None
    out = self._parallel_logits(x_ND)
    if self.frame_context is not None:
      if frame_NK is None:
        raise ValueError("sequential speech read-out (ModelConfig.speech_readout_frames > 1) needs "
                         "the frame being predicted: channel_logits(x, frame_NK), or "
                         "choose_channels to generate")
      f, m = self.readout_frames, self.frame_context.shape[0]
      prev = frame_NK[..., :(f - 1) * m].reshape(frame_NK.shape[:-1] + (f - 1, m))
      context = jnp.concatenate([jnp.zeros(out.shape[:-2] + (m - 1, out.shape[-1]), out.dtype),
                                 self._context_logits(prev, slice(m - 1, None))], axis=-2)
      out = out + context
    return self._mask_channels(out, slice(None))

  def choose_channels(self, x_ND, level0_N,
                      pick: Callable[[jax.Array, int], jax.Array]):
    """int32[..., K-1]: speech channels 1..K-1 chosen by `pick(logits [..., n, C_max], frame j)
    -> int[..., n]`, frame after frame under sequential read-out (frame 0 starts with channel 0's
    level `level0_N` int[...], chosen by the unified head), else all at once (`pick(logits, 0)`)."""
    if self.frame_context is None:
      return pick(self.channel_logits(x_ND), 0).astype(jnp.int32)
    f, m = self.readout_frames, self.frame_context.shape[0]
    base = self._parallel_logits(x_ND)
    chosen, previous = [], None
    for j in range(f):
      span = slice(max(j * m - 1, 0), (j + 1) * m - 1)    # frame j's channels among 1..K-1
      logits = base[..., span, :]
      if j:
        logits = logits + self._context_logits(previous[..., None, :], span)
      codes = pick(self._mask_channels(logits, span), j).astype(jnp.int32)
      chosen.append(codes)
      previous = jnp.concatenate([level0_N[..., None].astype(jnp.int32), codes], -1) if j == 0 \
          else codes
    return jnp.concatenate(chosen, axis=-1)

  def _parallel_logits(self, x_ND):
    """Unmasked float32 [..., K-1, C_max]: each channel read from the hidden state alone."""
    return jnp.einsum("...d,dkc->...kc", x_ND.astype(self.dtype),
                      self.channel_kernel[...].astype(self.dtype)).astype(jnp.float32)

  def _context_logits(self, prev_NFM, span: slice):
    """Logits [..., F' x M, C_max] of the channels in `span` (frames 1.. of it, M each) from the
    levels of the frames before them, prev int[..., F', M] (out-of-range levels add nothing)."""
    onehot = jax.nn.one_hot(prev_NFM, self.max_codebook, dtype=self.dtype)       # [..., F', M, C]
    context = jnp.einsum("...fmc,mcd->...fd", onehot,
                         self.frame_context[...].astype(self.dtype))             # [..., F', D]
    kernel = self.channel_kernel[...][:, span].astype(self.dtype)                 # [D, F' x M, C]
    d, n, c = kernel.shape
    f = prev_NFM.shape[-2]
    out = jnp.einsum("...fd,dfmc->...fmc", context, kernel.reshape(d, f, n // f, c))
    return out.reshape(out.shape[:-3] + (n, c)).astype(jnp.float32)

  def _mask_channels(self, logits_NKC, span: slice):
    """NEG_INF past each channel's codebook size (static: codebook sizes may differ)."""
    extra = np.asarray(self.cfg.vocab.extra_codebook_sizes)[span]
    valid_KC = np.arange(self.max_codebook)[None, :] < extra[:, None]
    return jnp.where(valid_KC, logits_NKC, NEG_INF)
