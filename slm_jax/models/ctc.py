"""Auxiliary CTC loss on paired examples: the decoder's hidden states at speech frames predict the
transcript, monotonically aligned (Graves et al., 2006; joint CTC-attention, Watanabe et al., 2017).

A decoder-only model learns ASR by attending from each text position to the frames of the word it
is about to write, and TTS by tracking which word the frame it writes belongs to. From scratch
those alignments emerge late; a CTC head over the speech frames of ASR and TTS examples makes the
frames' hidden states encode the text they carry from the first steps, which attention then finds
by content. The head (`ModelConfig.asr_ctc`) is a [D, text_size + 1] projection (class 0 = blank)
used only by this loss; generation never reads it.

A segment is paired when it holds the ASR or TTS task tag; its frames are its speech positions and
its labels its text tokens (the transcript: the ASR answer, the TTS prompt). Per row, CTC runs over
the concatenation of the row's paired segments (packed rows hold several): their frames in order
against their transcripts in order. That lets an alignment cross a segment boundary only where a
segment's labels end, a negligible relaxation of per-segment CTC that keeps packing. At most
`max_labels` labels per row.
"""
from __future__ import annotations

import jax.numpy as jnp
import optax

from slm_jax.unified_vocab import MODALITY_SPEECH, MODALITY_TEXT

PAIRED_TAGS = ("[ASR]", "[TTS]")


def tagged_segments(tokens_BL, segment_ids_BL, tag_ids) -> jnp.ndarray:
  """bool[B, L]: position belongs to a (non-padding) segment that contains one of `tag_ids`."""
  is_tag_BL = jnp.isin(tokens_BL, jnp.asarray(tag_ids, tokens_BL.dtype))
  same_BLL = segment_ids_BL[:, :, None] == segment_ids_BL[:, None, :]
  return (same_BLL & is_tag_BL[:, None, :]).any(-1) & (segment_ids_BL > 0)


def asr_ctc_sums(model, hidden_BLD, batch, *, max_labels: int | None = None) -> dict:
  """{"ctc": summed CTC negative log-likelihood over rows, "ctc_labels": label count}."""
  vocab = model.cfg.vocab
  tokens = batch["tokens"]
  b, l = tokens.shape
  n = int(max_labels or max(1, l // 2))
  paired_BL = tagged_segments(tokens, batch["segment_ids"],
                              [vocab.special_id(t) for t in PAIRED_TAGS])
  modality_BL = vocab.modality(tokens)
  frames_BL = paired_BL & (modality_BL == MODALITY_SPEECH)
  labels_BL = paired_BL & (modality_BL == MODALITY_TEXT)
  # Left-compact each row's labels into [B, N] (class = text id + 1; 0 is the blank).
  slot_BL = jnp.where(labels_BL, jnp.cumsum(labels_BL, axis=1) - 1, n)
  classes_BL = jnp.where(labels_BL, tokens - vocab.text_start + 1, 0).astype(jnp.int32)
  labels_BN = jnp.zeros((b, n), jnp.int32).at[jnp.arange(b)[:, None], slot_BL].set(
      classes_BL, mode="drop")
  count_B = jnp.minimum(labels_BL.sum(1), n)
  label_pad_BN = (jnp.arange(n)[None, :] >= count_B[:, None]).astype(jnp.float32)
  logits_BLC = model.heads.ctc_logits(hidden_BLD)
  nll_B = optax.ctc_loss(logits_BLC, 1.0 - frames_BL.astype(jnp.float32), labels_BN, label_pad_BN)
  nll_B = jnp.where(count_B > 0, nll_B, 0.0)
  return {"ctc": nll_B.sum(), "ctc_labels": count_B.sum().astype(jnp.float32)}

