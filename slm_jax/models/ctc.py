"""Auxiliary CTC loss on paired examples: the decoder's hidden states at speech frames predict the
transcript, monotonically aligned (Graves et al., 2006; joint CTC-attention, Watanabe et al., 2017).

A decoder-only model learns ASR by attending from each text position to the frames of the word it
is about to write, and TTS by tracking which word the frame it writes belongs to. From scratch
those alignments emerge late; a CTC head over the speech frames of ASR and TTS examples makes the
frames' hidden states encode the text they carry from the first steps, which attention then finds
by content. The head (`ModelConfig.asr_ctc`) is a [D, U x C] projection, U = `ctc_upsample`
outputs per position and C classes (class 0 = blank, then text ids, or characters when
`ctc_alphabet` is set: models/ctc_spelling.py), used only by this loss and by CTC decoding;
generation never reads it.

A segment is paired when it holds one of the task tags `tags` (`LossOptions.ctc_tags`; default the
ASR and TTS tags); its frames are its speech positions and
its labels its text tokens (the transcript: the ASR answer, the TTS prompt). Per row, CTC runs over
the concatenation of the row's paired segments (packed rows hold several): their frames in order
against their transcripts in order. That lets an alignment cross a segment boundary only where a
segment's labels end, a negligible relaxation of per-segment CTC that keeps packing. At most
`max_labels` labels per row.
"""
from __future__ import annotations

import jax.numpy as jnp
import numpy as np
import optax

from slm_jax.configuration import ConfigError
from slm_jax.models.ctc_spelling import CtcSpelling
from slm_jax.unified_vocab import MODALITY_SPEECH, MODALITY_TEXT

PAIRED_TAGS = ("[ASR]", "[TTS]")


def tagged_segments(tokens_BL, segment_ids_BL, tag_ids) -> jnp.ndarray:
  """bool[B, L]: position belongs to a (non-padding) segment that contains one of `tag_ids`."""
  is_tag_BL = jnp.isin(tokens_BL, jnp.asarray(tag_ids, tokens_BL.dtype))
  same_BLL = segment_ids_BL[:, :, None] == segment_ids_BL[:, None, :]
  return (same_BLL & is_tag_BL[:, None, :]).any(-1) & (segment_ids_BL > 0)


def _compact(values_BX, keep_BX, width: int):
  """Left-compacts each row's kept values into int32[B, width] (later ones dropped), and counts."""
  b = values_BX.shape[0]
  slot_BX = jnp.where(keep_BX, jnp.cumsum(keep_BX, axis=1) - 1, width)
  out_BW = jnp.zeros((b, width), jnp.int32).at[jnp.arange(b)[:, None], slot_BX].set(
      jnp.where(keep_BX, values_BX, 0).astype(jnp.int32), mode="drop")
  return out_BW, jnp.minimum(keep_BX.sum(1), width)


def asr_ctc_sums(model, hidden_BLD, batch, *, max_labels: int | None = None,
                 spelling: CtcSpelling | None = None, tags=PAIRED_TAGS) -> dict:
  """{"ctc": summed CTC negative log-likelihood over rows, "ctc_labels": label count}.

  Labels are text ids, or with `ModelConfig.ctc_alphabet` the characters of their `spelling`
  (models/ctc_spelling.py); each speech frame gives `ModelConfig.ctc_upsample` outputs in order.
  """
  cfg = model.cfg
  vocab = cfg.vocab
  tokens = batch["tokens"]
  b, l = tokens.shape
  paired_BL = tagged_segments(tokens, batch["segment_ids"], _tag_ids(vocab, tags))
  modality_BL = vocab.modality(tokens)
  frames_BL = paired_BL & (modality_BL == MODALITY_SPEECH)
  labels_BL = paired_BL & (modality_BL == MODALITY_TEXT)
  text_id_BL = tokens - vocab.text_start
  if cfg.ctc_alphabet:
    table_TP = jnp.asarray(_checked_table(cfg, spelling))
    chars_BLP = table_TP[jnp.where(labels_BL, text_id_BL, 0)]       # classes; 0 = no character
    keep_BLP = labels_BL[:, :, None] & (chars_BLP > 0)
    n = int(max_labels or l)      # characters: about 1.2 per speech position
    labels_BN, count_B = _compact(chars_BLP.reshape(b, -1), keep_BLP.reshape(b, -1), n)
  else:
    n = int(max_labels or max(1, l // 2))
    labels_BN, count_B = _compact(text_id_BL + 1, labels_BL, n)    # class = text id + 1
  label_pad_BN = (jnp.arange(n)[None, :] >= count_B[:, None]).astype(jnp.float32)
  u = cfg.ctc_upsample
  logits_BTC = model.heads.ctc_logits(hidden_BLD).reshape(b, l * u, cfg.ctc_classes)
  frame_pad_BT = jnp.repeat(1.0 - frames_BL.astype(jnp.float32), u, axis=1)
  nll_B = optax.ctc_loss(logits_BTC, frame_pad_BT, labels_BN, label_pad_BN)
  nll_B = jnp.where(count_B > 0, nll_B, 0.0)
  return {"ctc": nll_B.sum(), "ctc_labels": count_B.sum().astype(jnp.float32)}


def _tag_ids(vocab, tags) -> list[int]:
  if not tags:
    raise ConfigError("LossOptions.ctc_tags is empty: name the task tags whose examples the CTC "
                      "loss reads, e.g. ('[ASR]', '[TTS]')")
  try:
    return [vocab.special_id(t) for t in tags]
  except KeyError as e:
    raise ConfigError(f"LossOptions.ctc_tags: {e.args[0]}") from None


def _checked_table(cfg, spelling: CtcSpelling | None):
  if spelling is None:
    raise ConfigError(f"ModelConfig.ctc_alphabet={cfg.ctc_alphabet!r}: the CTC loss spells the "
                      "transcript through the text tokenizer: set LossOptions.ctc_spelling = "
                      "@ctc_spelling() and ctc_spelling.text_tokenizer = PATH")
  if spelling.alphabet != cfg.ctc_alphabet:
    raise ConfigError(f"LossOptions.ctc_spelling's alphabet {spelling.alphabet!r} differs from "
                      f"ModelConfig.ctc_alphabet {cfg.ctc_alphabet!r}: bind both to one macro")
  if len(spelling.spellings) > cfg.vocab.text_size:
    raise ConfigError(f"LossOptions.ctc_spelling spells {len(spelling.spellings)} text ids but the "
                      f"model has text_size={cfg.vocab.text_size}: build it from the model's text "
                      "tokenizer")
  table = spelling.table()      # ids past the tokenizer's (a padded text range) spell nothing
  return np.pad(table, ((0, cfg.vocab.text_size - table.shape[0]), (0, 0)))
