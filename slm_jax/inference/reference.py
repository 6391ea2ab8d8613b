"""Generation without a cache: every step recomputes the whole sequence (the check and the peer).

The engine's cached decoding must equal this token for token under greedy sampling, and
`bench/decode.py` measures the engine against it. One sequence at a time, padded to a fixed
length so the step compiles once.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from slm_jax.inference import sampling
from slm_jax.inference.engine import prompt_modality
from slm_jax.unified_vocab import EOS_ID


def greedy_uncached(model, prompt_ids, max_new_tokens: int, max_length: int, mode: str = "any",
                    prompt_codes=None, stop_ids=(EOS_ID,)):
  """Greedy continuation of one prompt by full recomputation.

  Returns (tokens int32[n], codes int32[n, K-1]) of the generated part (stop token included).
  """
  cfg = model.cfg
  ids = sampling.ModalityIds.from_vocab(cfg.vocab)
  k_extra = cfg.vocab.num_channels - 1
  graphdef, params = nnx.split(model)

  @jax.jit
  def next_token(params, tokens_1S, codes_1SK, length, mode_1, modality_1):
    m = nnx.merge(graphdef, params)
    index_1S = jnp.arange(max_length)[None]
    segment_ids_1S = (index_1S < length).astype(jnp.int32)
    h_1SD = m(tokens_1S, segment_ids_1S, index_1S.astype(jnp.int32),
              codes_1SK if k_extra else None)
    h_1D = jax.lax.dynamic_index_in_dim(h_1SD, length - 1, axis=1, keepdims=False)
    logits_1V = m.heads.logits(h_1D)
    allowed = sampling.allowed_ids(ids, mode_1, modality_1, logits_1V.shape[-1])
    token = jnp.argmax(sampling.apply_mask(logits_1V, allowed), -1).astype(jnp.int32)
    if k_extra:
      codes = m.heads.choose_channels(h_1D, token - cfg.vocab.speech_start,
                                      lambda logits, _: jnp.argmax(logits, -1))
      codes = jnp.where(cfg.vocab.is_speech(token)[:, None], codes, 0)
    else:
      codes = jnp.zeros((1, 0), jnp.int32)
    return token, codes

  prompt = np.asarray(prompt_ids, np.int32)
  n = prompt.size
  tokens = np.zeros((1, max_length), np.int32)
  tokens[0, :n] = prompt
  codes = np.zeros((1, max_length, k_extra), np.int32)
  if k_extra and prompt_codes is not None:
    codes[0, :n] = prompt_codes
  mode_1 = jnp.array([sampling.MODES[mode]], jnp.int32)
  modality = prompt_modality(prompt, ids)
  out_tokens, out_codes = [], []
  length = n
  for _ in range(max_new_tokens):
    token, new_codes = next_token(params, jnp.asarray(tokens), jnp.asarray(codes), jnp.int32(length),
                                  mode_1, jnp.array([modality], jnp.int32))
    t = int(token[0])
    out_tokens.append(t)
    out_codes.append(np.asarray(new_codes[0]))
    modality = int(sampling.next_modality(ids, jnp.array([modality]), token)[0])
    if t in stop_ids or length >= max_length:
      break
    tokens[0, length] = t
    codes[0, length] = np.asarray(new_codes[0])
    length += 1
  return np.asarray(out_tokens, np.int32), np.asarray(out_codes, np.int32).reshape(len(out_tokens), k_extra)
