"""ASR by joint CTC/attention beam search (Watanabe et al. 2017; Hori et al. 2017).

    texts = joint_transcribe(session, frames_list, ctc_weight=0.5, beam_size=4)

The decoder writes the transcript (the ASR prompt of inference/prompts.py, then text tokens until
EOS), and every hypothesis is ranked by

    score(h) = lambda * log p_ctc(h) + (1 - lambda) * log p_att(h)

where log p_att sums the decoder's next-token log-probabilities (renormalized over the answer's
candidates: text ids and EOS) and log p_ctc is the CTC head's prefix score of h
(inference/ctc_prefix_score.py), or its full probability when h ends with EOS. The CTC term
keeps the hypotheses monotonically aligned to the speech (no skipped or looped words, ends where
the audio ends); the decoder brings the language model.

The CTC head may score text ids or characters (`ModelConfig.ctc_alphabet`), with any number of
outputs per speech frame (`ctc_upsample`: the outputs are read in time order). A character head
scores a text piece by its spelling (models/ctc_spelling.py): the piece's characters extend the
hypothesis's CTC state in one pass over the frames (`ctc_prefix_score.extend_pieces`). Spelling
every piece of the vocabulary each step would cost C passes, so, as in ESPnet, only each live
hypothesis's `pre_beam` best decoder candidates (and EOS) are spelled and scored; a head over
text ids scores every candidate at once.

Search: each step expands the live hypotheses by every candidate, keeps the `beam_size` best of
all of an utterance's expansions; a chosen EOS moves that hypothesis to the utterance's best
finished one and frees its beam. Both terms only decrease as a hypothesis grows, so an utterance
is done when its best finished score beats every live one. With beam 1 and lambda 0 this is the
greedy decoder. At `max_new_tokens` the best live hypothesis competes unfinished (like greedy
generation that runs out of budget).

Everything runs in one jit-compiled function per (batch, prompt bucket) shape: a batched prefill
of the prompts (right-padded; each row continues at its own position), the CTC head's
log-probabilities at the speech frames, then a lax.while_loop of decode steps through
`forward_cached` on utterances x beams rows, the KV cache reordered to the chosen parents.
Compiled functions are cached per model structure and reused across batches and parameters.
"""
from __future__ import annotations

import functools
from typing import Sequence

import flax.struct
import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from slm_jax.errors import SlmError
from slm_jax.inference import ctc_prefix_score as cps
from slm_jax.inference import prompts
from slm_jax.inference.ctc_decoding import NoCtcHeadError
from slm_jax.models import ctc_spelling
from slm_jax.models.build import init_cache
from slm_jax.unified_vocab import EOS_ID, MODALITY_SPEECH

NEG = cps.NEG


class JointDecodingError(SlmError, ValueError):
  """Joint decoding settings out of range."""


@flax.struct.dataclass
class _Search:
  """The loop's carry; N = B utterances x W beams, M = max_new_tokens, C = text ids + 1."""
  step: jax.Array               # int32: tokens chosen so far
  cache: object                 # the KV cache of the N rows
  att_next_NC: jax.Array        # log p_att of each candidate (column 0: EOS, c: text id c - 1)
  ctc: cps.PrefixState
  att_sum_N: jax.Array          # log p_att of each live hypothesis
  score_N: jax.Array            # combined score of each live hypothesis (NEG: no hypothesis)
  history_NM: jax.Array         # int32 text ids chosen so far
  best_score_B: jax.Array       # the best finished hypothesis of each utterance
  best_history_BM: jax.Array
  best_length_B: jax.Array
  done_B: jax.Array


def _check(ctc_weight: float, beam_size: int, max_new_tokens: int) -> None:
  if not 0.0 <= ctc_weight <= 1.0:
    raise JointDecodingError(f"ctc_weight must be in [0, 1], got {ctc_weight}")
  if beam_size < 1:
    raise JointDecodingError(f"beam_size must be >= 1, got {beam_size}")
  if max_new_tokens < 1:
    raise JointDecodingError(f"max_new_tokens must be >= 1, got {max_new_tokens}")


def _combine(ctc_weight: float, ctc, att):
  """lambda * ctc + (1 - lambda) * att, without multiplying a NEG by zero at the ends."""
  if ctc_weight == 0.0:
    return att
  if ctc_weight == 1.0:
    return ctc
  return ctc_weight * ctc + (1.0 - ctc_weight) * att


def _reorder(cache, rows_N):
  """The cache's rows gathered (stacked keys/values [Y, B, ...] on axis 1, slot metadata on 0)."""
  return jax.tree.map(lambda x: jnp.take(x, rows_N, axis=1 if x.ndim == 5 else 0), cache)


def at_positions(h_BLD, index_BT):
  """Hidden states at per-row positions: [B, T, D] (each leaf of a Zipper's pytree of towers)."""
  def take(x):
    return jnp.take_along_axis(x, index_BT.reshape(index_BT.shape + (1,) * (x.ndim - 2)), axis=1)
  return jax.tree.map(take, h_BLD)


def _repeat(cache, w: int):
  return jax.tree.map(lambda x: jnp.repeat(x, w, axis=1 if x.ndim == 5 else 0), cache)


def pieces_table(spelling, num_text_ids: int) -> np.ndarray:
  """int32[num_text_ids, K]: each text id's characters as CTC classes, 0-padded (K >= 1)."""
  table = spelling.table()
  if table.shape[0] < num_text_ids:
    table = np.concatenate([table, np.zeros((num_text_ids - table.shape[0], table.shape[1]),
                                            np.int32)])
  return table[:num_text_ids]


@functools.lru_cache(maxsize=8)
def _search_fn(graphdef, beam_size: int, ctc_weight: float, max_new_tokens: int,
               pre_beam: int = 0):
  """The jit-compiled search (see the module docstring); shapes from its arguments. pre_beam 0:
  the head scores text ids and every candidate is scored; pre_beam P > 0: a character head, and
  only each hypothesis's P best decoder candidates (and EOS) are spelled and scored."""
  w, m = beam_size, max_new_tokens

  def candidates(model, h_ND, vocab):
    logits = model.heads.logits(h_ND)
    cand_NC = jnp.concatenate([logits[:, EOS_ID:EOS_ID + 1],
                               logits[:, vocab.text_start:vocab.speech_start]], axis=1)
    return jax.nn.log_softmax(cand_NC.astype(jnp.float32), axis=-1)

  @jax.jit
  def search(params, tokens_BL, codes_BLK, length_B, frame_start_B, frame_count_B,
             pieces_CK=None):
    model = nnx.merge(graphdef, params)
    cfg, vocab = model.cfg, model.cfg.vocab
    b, l = tokens_BL.shape
    n = b * w
    index_1L = jnp.arange(l)[None]
    segment_BL = (index_1L < length_B[:, None]).astype(jnp.int32)
    positions_BL = jnp.broadcast_to(index_1L, (b, l)).astype(jnp.int32)
    cache = init_cache(cfg, b, l + m + 1)
    h_BLD, cache = model.forward_cached(tokens_BL, segment_BL, positions_BL, codes_BLK, cache,
                                        empty=True)
    # The CTC head at each row's speech frames, left-aligned: [B, T = L x U outputs, C].
    frame_BT = jnp.minimum(frame_start_B[:, None] + index_1L, l - 1)
    h_BTD = at_positions(h_BLD, frame_BT)
    logits_BTUC = model.heads.ctc_logits(h_BTD)
    u = logits_BTUC.shape[2]
    logp_BTC = jax.nn.log_softmax(logits_BTUC.reshape(b, l * u, -1), axis=-1)
    valid_BT = jnp.arange(l * u)[None] < (frame_count_B * u)[:, None]
    logp_NTC, valid_NT = jnp.repeat(logp_BTC, w, axis=0), jnp.repeat(valid_BT, w, axis=0)
    h_BD = at_positions(h_BLD, (length_B - 1)[:, None])[:, 0]
    att_next_NC = jnp.repeat(candidates(model, h_BD, vocab), w, axis=0)
    length_N = jnp.repeat(length_B, w)
    first_beam_N = (jnp.arange(n) % w) == 0          # one live hypothesis (the empty one) each
    state = _Search(
        jnp.int32(0), _repeat(cache, w), att_next_NC, cps.initial_state(logp_NTC, valid_NT),
        jnp.zeros((n,), jnp.float32), jnp.where(first_beam_N, 0.0, NEG).astype(jnp.float32),
        jnp.zeros((n, m), jnp.int32), jnp.full((b,), NEG, jnp.float32),
        jnp.zeros((b, m), jnp.int32), jnp.zeros((b,), jnp.int32), jnp.zeros((b,), bool))
    num_extra = vocab.num_channels - 1

    def score_every_text_id(s: _Search, att_NC):
      """Candidates = every column (0: EOS, c: text id c - 1), each its CTC class."""
      cand_NX = jnp.broadcast_to(jnp.arange(att_NC.shape[1]), att_NC.shape)
      ctc_NX = (cps.prefix_scores(s.ctc, logp_NTC, valid_NT) if ctc_weight > 0.0
                else jnp.zeros_like(att_NC))

      def chosen_state(parent_N, col_N, extended_N):
        if ctc_weight == 0.0:
          return s.ctc
        return cps.extend(s.ctc, logp_NTC, valid_NT, parent_N, jnp.where(extended_N, col_N, 0))
      return att_NC, ctc_NX, cand_NX, chosen_state

    def score_spelled_pieces(s: _Search, att_NC):
      """Candidates = EOS and the decoder's P best text ids, each spelled in characters."""
      top_NP, index_NP = jax.lax.top_k(att_NC[:, 1:], pre_beam)
      cand_NX = jnp.concatenate([jnp.zeros((n, 1), jnp.int32), index_NP + 1], axis=1)
      att_NX = jnp.concatenate([att_NC[:, :1], top_NP], axis=1)
      if ctc_weight == 0.0:
        return att_NX, jnp.zeros_like(att_NX), cand_NX, lambda *_: s.ctc
      pieces_QK = pieces_CK[index_NP.reshape(-1)]
      spelled, psi_Q = cps.extend_pieces(s.ctc, logp_NTC, valid_NT,
                                         jnp.repeat(jnp.arange(n), pre_beam), pieces_QK)
      ctc_NX = jnp.concatenate([cps.end_score(s.ctc)[:, None], psi_Q.reshape(n, pre_beam)], 1)

      def chosen_state(parent_N, col_N, extended_N):
        q_N = parent_N * pre_beam + jnp.maximum(col_N - 1, 0)
        picked = jax.tree.map(lambda x: x[q_N], spelled)
        return jax.tree.map(lambda a: jnp.where(
            extended_N.reshape((-1,) + (1,) * (a.ndim - 1)), a, jnp.full_like(a, NEG)
            if a.dtype == jnp.float32 else 0), picked)
      return att_NX, ctc_NX, cand_NX, chosen_state

    def step(s: _Search) -> _Search:
      att_NC = s.att_sum_N[:, None] + s.att_next_NC
      scorer = score_spelled_pieces if pre_beam else score_every_text_id
      att_NX, ctc_NX, cand_NX, chosen_state = scorer(s, att_NC)
      x = att_NX.shape[1]
      live_N = (s.score_N > NEG / 2) & ~jnp.repeat(s.done_B, w)
      total_NX = jnp.where(live_N[:, None], _combine(ctc_weight, ctc_NX, att_NX), NEG)
      value_BW, flat_BW = jax.lax.top_k(total_NX.reshape(b, w * x), w)
      parent_N = (jnp.arange(b)[:, None] * w + flat_BW // x).reshape(n)
      col_N = (flat_BW % x).reshape(n)
      cand_N = cand_NX[parent_N, col_N]
      value_N = value_BW.reshape(n)
      ok_N = value_N > NEG / 2
      # A chosen EOS finishes its hypothesis: keep the utterance's best.
      ended_BW = jnp.where((cand_N == 0) & ok_N, value_N, NEG).reshape(b, w)
      k_B = jnp.argmax(ended_BW, axis=1)
      ended_B = jnp.take_along_axis(ended_BW, k_B[:, None], axis=1)[:, 0]
      better_B = ended_B > s.best_score_B
      ended_history_BM = s.history_NM[parent_N.reshape(b, w)[jnp.arange(b), k_B]]  # slot k's parent
      best_score_B = jnp.where(better_B, ended_B, s.best_score_B)
      best_history_BM = jnp.where(better_B[:, None], ended_history_BM, s.best_history_BM)
      best_length_B = jnp.where(better_B, s.step, s.best_length_B)
      # The rest continue: histories, scores and CTC states of (parent, candidate).
      extended_N = (cand_N > 0) & ok_N
      score_N = jnp.where(extended_N, value_N, NEG)
      history_NM = s.history_NM[parent_N].at[:, s.step].set(jnp.maximum(cand_N - 1, 0))
      att_sum_N = att_NX[parent_N, col_N]
      ctc = chosen_state(parent_N, col_N, extended_N)
      token_N = jnp.where(extended_N, vocab.text_start + cand_N - 1, EOS_ID).astype(jnp.int32)
      position_N = length_N + s.step
      codes = jnp.zeros((n, 1, num_extra), jnp.int32) if num_extra else None
      h_N1D, cache = model.forward_cached(token_N[:, None], jnp.ones((n, 1), jnp.int32),
                                          position_N[:, None], codes, _reorder(s.cache, parent_N))
      att_next_NC = candidates(model, h_N1D[:, 0], vocab)
      best_live_B = score_N.reshape(b, w).max(axis=1)
      done_B = s.done_B | (best_live_B <= best_score_B)
      return _Search(s.step + 1, cache, att_next_NC, ctc, att_sum_N, score_N, history_NM,
                     best_score_B, best_history_BM, best_length_B, done_B)

    def more(s: _Search):
      return (s.step < m) & ~jnp.all(s.done_B)

    s = jax.lax.while_loop(more, step, state)
    # Out of budget: the best live hypothesis competes unfinished.
    live_BW = jnp.where(jnp.repeat(s.done_B, w), NEG, s.score_N).reshape(b, w)
    k_B = jnp.argmax(live_BW, axis=1)
    live_B = jnp.take_along_axis(live_BW, k_B[:, None], axis=1)[:, 0]
    use_live_B = live_B > s.best_score_B
    history_BM = jnp.where(use_live_B[:, None], s.history_NM[jnp.arange(b) * w + k_B],
                           s.best_history_BM)
    length_B = jnp.where(use_live_B, s.step, s.best_length_B)
    return history_BM, length_B, jnp.maximum(live_B, s.best_score_B)

  return search


def joint_decode_ids(model, frames_list: Sequence[np.ndarray], *, ctc_weight: float = 0.5,
                     beam_size: int = 4, max_new_tokens: int = 96, batch_size: int = 8,
                     bucket: int = 64, spelling=None, pre_beam: int | None = None
                     ) -> list[np.ndarray]:
  """Text ids (int32[n]) of the best joint hypothesis for each utterance's frames [T, K].

  A character CTC head (`ModelConfig.ctc_alphabet`) needs `spelling` (models/ctc_spelling.py:
  the text vocabulary's pieces over that alphabet); only each hypothesis's `pre_beam` best
  decoder candidates (default 1.5 x beam) are then spelled and scored by the head. Pieces that
  spell nothing in the alphabet cannot be chosen while the CTC weight is above 0.
  """
  _check(ctc_weight, beam_size, max_new_tokens)
  cfg, vocab = model.cfg, model.cfg.vocab
  if not getattr(cfg, "asr_ctc", False):
    raise NoCtcHeadError("joint decoding needs the CTC head (ModelConfig.asr_ctc); this model "
                         "was trained without one: use the decoder alone")
  pieces, pre = None, 0                 # a head over text ids: every candidate scored
  if cfg.ctc_alphabet:
    if spelling is None or spelling.alphabet != cfg.ctc_alphabet:
      raise JointDecodingError(
          f"this model's CTC head spells characters (ctc_alphabet={cfg.ctc_alphabet!r}): joint "
          f"decoding needs the text vocabulary's spelling over that alphabet "
          f"(ctc_spelling.spelling_from_vocab(text_vocab, cfg.ctc_alphabet))")
    pre = int(pre_beam) if pre_beam is not None else max(beam_size, int(np.ceil(1.5 * beam_size)))
    if pre < 1:
      raise JointDecodingError(f"pre_beam must be >= 1, got {pre_beam}")
    pre = min(pre, vocab.text_size)
    pieces = pieces_table(spelling, vocab.text_size)
  graphdef, params = nnx.split(model)
  search = _search_fn(graphdef, int(beam_size), float(ctc_weight), int(max_new_tokens), pre)
  built = [prompts.asr(vocab, f) for f in frames_list]
  k_extra = vocab.num_channels - 1
  out: list[np.ndarray] = []
  for start in range(0, len(built), batch_size):
    chunk = built[start:start + batch_size]
    rows = chunk + [chunk[0]] * (batch_size - len(chunk))     # a fixed batch shape
    length = -(-max(p.ids.size for p in rows) // bucket) * bucket
    tokens = np.zeros((batch_size, length), np.int32)
    codes = np.zeros((batch_size, length, k_extra), np.int32) if k_extra else None
    lengths, frame_start, frame_count = (np.zeros((batch_size,), np.int32) for _ in range(3))
    for i, p in enumerate(rows):
      size = p.ids.size
      tokens[i, :size], lengths[i] = p.ids, size
      if k_extra:
        codes[i, :size] = p.codes
      speech = np.flatnonzero(np.asarray(vocab.modality(p.ids)) == MODALITY_SPEECH)
      frame_start[i], frame_count[i] = (speech[0], speech.size) if speech.size else (0, 0)
    history, count, _ = search(params, tokens, codes, lengths, frame_start, frame_count, pieces)
    history, count = np.asarray(history), np.asarray(count)
    out += [history[i, :count[i]].astype(np.int32) for i in range(len(chunk))]
  return out


def session_spelling(session):
  """The spelling of the session's text vocabulary over its model's CTC alphabet (None for a
  head over text ids)."""
  alphabet = session.model.cfg.ctc_alphabet
  if not alphabet:
    return None
  if session.text_vocab is None:
    raise JointDecodingError("joint decoding with a character CTC head spells the text "
                             "vocabulary's pieces: load a checkpoint that ships its text tokenizer")
  return ctc_spelling.spelling_from_vocab(session.text_vocab, alphabet, session.vocab.text_size)


def joint_transcribe(session, frames_list: Sequence[np.ndarray], *, ctc_weight: float = 0.5,
                     beam_size: int = 4, max_new_tokens: int = 96, batch_size: int = 8,
                     bucket: int = 64, pre_beam: int | None = None) -> list[str]:
  """Transcripts (one string per utterance) of speech frames [T, K] by joint decoding."""
  ids = joint_decode_ids(session.model, frames_list, ctc_weight=ctc_weight, beam_size=beam_size,
                         max_new_tokens=max_new_tokens, batch_size=batch_size, bucket=bucket,
                         spelling=session_spelling(session), pre_beam=pre_beam)
  return [session.decode_text(x) if x.size else "" for x in ids]
