"""ASR by the model's CTC head (models/ctc.py): one forward pass over the ASR prompt, then best-path
decoding of the head's outputs at the speech frames (blanks and repeats removed): text ids decoded
by the text tokenizer, or, for a character head (`ModelConfig.ctc_alphabet`), its characters.

    texts = ctc_transcribe(session, [session.encode_audio("a.wav"), ...])

The CTC head is auxiliary (trained beside the decoder, never read by generation), so this is a
second view of what the model learned: it needs no autoregressive decoding and shows the acoustic
learning before the decoder's attention has aligned to the speech. Rows are padded to a multiple
of `bucket` positions, so a few shapes compile.
"""
from __future__ import annotations

import functools
from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from slm_jax.errors import SlmError
from slm_jax.inference import prompts
from slm_jax.models import ctc_spelling
from slm_jax.unified_vocab import MODALITY_SPEECH


class NoCtcHeadError(SlmError, ValueError):
  """The model was trained without a CTC head (ModelConfig.asr_ctc)."""


def best_path(classes_T: np.ndarray) -> list[int]:
  """Best-path CTC collapse of per-output classes (0 = blank) -> labels (class - 1: text ids, or
  alphabet indices for a character head)."""
  out, prev = [], 0
  for c in np.asarray(classes_T).tolist():
    if c != prev and c != 0:
      out.append(c - 1)
    prev = c
  return out


@functools.lru_cache(maxsize=4)
def _forward(graphdef):
  @jax.jit
  def f(state, tokens_BL, segment_ids_BL, positions_BL, codes_BLK):
    model = nnx.merge(graphdef, state)
    hidden_BLD = model(tokens_BL, segment_ids_BL, positions_BL, codes_BLK)
    return jnp.argmax(model.heads.ctc_logits(hidden_BLD), axis=-1)      # [B, L, U]
  return f


def ctc_transcribe(session, frames_list: Sequence[np.ndarray], *, batch_size: int = 8,
                   bucket: int = 64) -> list[str]:
  """Transcripts of speech frames [T, K] by the CTC head (one string per utterance)."""
  model, vocab = session.model, session.vocab
  if not getattr(model.cfg, "asr_ctc", False):
    raise NoCtcHeadError("this model has no CTC head (it was trained without ModelConfig.asr_ctc)"
                         "; transcribe with the decoder instead")
  graphdef, state = nnx.split(model)
  forward = _forward(graphdef)
  built = [prompts.asr(vocab, f) for f in frames_list]
  k_extra = vocab.num_channels - 1
  out: list[str] = []
  for start in range(0, len(built), batch_size):
    chunk = built[start:start + batch_size]
    length = -(-max(p.ids.size for p in chunk) // bucket) * bucket
    b = batch_size
    tokens = np.zeros((b, length), np.int32)
    segments = np.zeros((b, length), np.int32)
    positions = np.zeros((b, length), np.int32)
    codes = np.zeros((b, length, k_extra), np.int32) if k_extra else None
    for i, p in enumerate(chunk):
      n = p.ids.size
      tokens[i, :n], segments[i, :n], positions[i, :n] = p.ids, 1, np.arange(n)
      if k_extra:
        codes[i, :n] = p.codes
    classes = np.asarray(forward(state, tokens, segments, positions, codes))
    is_frame = np.asarray(vocab.modality(tokens)) == MODALITY_SPEECH
    alphabet = model.cfg.ctc_alphabet
    for i in range(len(chunk)):
      ids = best_path(classes[i][is_frame[i] & (segments[i] > 0)].reshape(-1))  # frames x U
      if alphabet:      # a character head: class c is alphabet[c - 1]
        out.append(ctc_spelling.decode(alphabet, np.asarray(ids) + 1))
      else:
        out.append(session.decode_text(np.asarray(ids, np.int32)) if ids else "")
  return out
