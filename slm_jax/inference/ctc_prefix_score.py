"""CTC prefix scores of label hypotheses, for every next label at once (log space, float32).

The CTC prefix probability of a label sequence h is the probability that the labeling the CTC
head emits over the frames *begins* with h (Graves 2008; its use in joint CTC/attention decoding:
Watanabe et al. 2017). It is computed incrementally: a hypothesis g keeps, per frame t, the
forward variables

    r_nonblank[t]  log P(the first t frames collapse to g and frame t-1 emits g's last label)
    r_blank[t]     log P(the first t frames collapse to g and frame t-1 emits a blank)

(index 0 = before any frame). From them, the prefix score of every extension g + c is one
log-sum-exp over frames, with no recurrence:

    psi(g + c) = logsumexp_t [ phi_t(g, c) + x_t(c) ],
    phi_t(g, c) = r_blank[t](g) (+) (r_nonblank[t](g) unless c == last(g))

(x_t: the head's log-probabilities at frame t, (+): log-add). Ending the hypothesis scores
log P(g) = r_nonblank[T](g) (+) r_blank[T](g), the full CTC probability. Choosing an extension runs
the forward recurrence once for it (`extend`, a lax.scan over frames).

Classes follow models/ctc.py: 0 is the blank, class c >= 1 is text id c - 1. Rows are any batch
(utterances x beams); frames past a row's length (`valid_NT` false) leave every variable as it was,
so rows of different lengths share one padded frame axis. Impossible events get a large finite
negative (`NEG`), never -inf, so no arithmetic produces NaN.
"""
from __future__ import annotations

import flax.struct
import jax
import jax.numpy as jnp

NEG = -1e30


@flax.struct.dataclass
class PrefixState:
  """The forward variables of N hypotheses over T frames: [N, T + 1] each, and the last label."""
  r_nonblank_NT: jax.Array
  r_blank_NT: jax.Array
  last_N: jax.Array           # int32 class of the last label (0: the empty hypothesis)


def initial_state(logp_NTC: jax.Array, valid_NT: jax.Array) -> PrefixState:
  """The empty hypothesis of each row: all frames so far were blanks."""
  n, t = valid_NT.shape
  blank_NT = jnp.where(valid_NT, logp_NTC[..., 0], 0.0)
  r_blank = jnp.concatenate([jnp.zeros((n, 1)), jnp.cumsum(blank_NT, axis=1)], axis=1)
  return PrefixState(jnp.full((n, t + 1), NEG, jnp.float32), r_blank.astype(jnp.float32),
                     jnp.zeros((n,), jnp.int32))


def end_score(state: PrefixState) -> jax.Array:
  """float32[N]: log P(the frames' labeling is exactly the hypothesis)."""
  return jnp.logaddexp(state.r_nonblank_NT[:, -1], state.r_blank_NT[:, -1])


def prefix_scores(state: PrefixState, logp_NTC: jax.Array, valid_NT: jax.Array) -> jax.Array:
  """float32[N, C]: the prefix score of g + c for every label class c >= 1 (column 0, the blank,
  holds `end_score` instead, so one array ranks 'end here' beside every extension)."""
  c = logp_NTC.shape[-1]
  t = valid_NT.shape[1]
  same_1C = jnp.arange(c)[None, :] == state.last_N[:, None]                  # [N, C]
  r_nb_NT1 = state.r_nonblank_NT[:, :t, None]
  phi_NTC = jnp.logaddexp(state.r_blank_NT[:, :t, None],
                          jnp.where(same_1C[:, None, :], NEG, r_nb_NT1))
  terms_NTC = jnp.where(valid_NT[..., None], phi_NTC + logp_NTC, NEG)
  psi_NC = jax.nn.logsumexp(terms_NTC, axis=1)
  return psi_NC.at[:, 0].set(end_score(state)).astype(jnp.float32)


def extend(state: PrefixState, logp_NTC: jax.Array, valid_NT: jax.Array, parent_N: jax.Array,
           label_N: jax.Array) -> PrefixState:
  """The states of hypotheses parent + label (rows of `state` gathered by `parent_N`; `logp_NTC`
  and `valid_NT` are the new rows' frames). A label of 0 yields a dead state (all NEG)."""
  return extend_pieces(state, logp_NTC, valid_NT, parent_N, label_N[:, None])[0]


def extend_pieces(state: PrefixState, logp_NTC: jax.Array, valid_NT: jax.Array,
                  parent_Q: jax.Array, labels_QK: jax.Array) -> tuple[PrefixState, jax.Array]:
  """Hypotheses parent + several labels at once (a text piece spelled in characters), in one
  pass over the frames: (their states, their prefix scores float32[Q]).

  Row q extends row `parent_Q[q]` of `state` by `labels_QK[q]`: classes >= 1, left-aligned,
  0-padded (K: the longest). `logp_NTC` / `valid_NT` are indexed by the parent. The forward
  variables of every label j of the piece advance together, frame by frame:

      nonblank_j[t+1] = (nonblank_j[t] (+) phi_j[t]) + x_t(c_j)
      blank_j[t+1]    = (blank_j[t] (+) nonblank_j[t]) + x_t(blank)
      phi_j[t]        = blank_{j-1}[t] (+) (nonblank_{j-1}[t] unless c_j == c_{j-1})

  with j = 0 the parent's variables, and the prefix score sums phi + x over the frames for the
  last label. A row with no labels gets a dead state and a NEG score.
  """
  q, k = labels_QK.shape
  labels_QK = labels_QK.astype(jnp.int32)
  count_Q = jnp.sum(labels_QK > 0, axis=1)
  r_nb_QT = state.r_nonblank_NT[parent_Q]
  r_b_QT = state.r_blank_NT[parent_Q]
  previous_QK = jnp.concatenate([state.last_N[parent_Q][:, None], labels_QK[:, :-1]], axis=1)
  repeat_QK = labels_QK == previous_QK            # c_j == c_{j-1}: no direct move from nonblank
  # Only the piece's K label columns and the blank of each parent's [T, C] log-probabilities:
  # gathering whole rows (logp_NTC[parent_Q]) moves C / (K + 1) times the bytes.
  t_1T1 = jnp.arange(logp_NTC.shape[1])[None, :, None]
  x_label_QTK = logp_NTC[parent_Q[:, None, None], t_1T1, labels_QK[:, None, :]]
  x_blank_QT = logp_NTC[parent_Q, :, 0]
  valid_QT = valid_NT[parent_Q]
  last_Q1 = jnp.maximum(count_Q - 1, 0)[:, None]

  def frame(carry, xs):
    nonblank_QK, blank_QK, psi_Q = carry
    parent_nb_Q, parent_b_Q, x_label_QK, x_blank_Q, valid_Q = xs
    below_nb_QK = jnp.concatenate([parent_nb_Q[:, None], nonblank_QK[:, :-1]], axis=1)
    below_b_QK = jnp.concatenate([parent_b_Q[:, None], blank_QK[:, :-1]], axis=1)
    phi_QK = jnp.logaddexp(below_b_QK, jnp.where(repeat_QK, NEG, below_nb_QK))
    enter_Q = jnp.take_along_axis(phi_QK + x_label_QK, last_Q1, axis=1)[:, 0]
    new_nonblank = jnp.logaddexp(nonblank_QK, phi_QK) + x_label_QK
    new_blank = jnp.logaddexp(blank_QK, nonblank_QK) + x_blank_Q[:, None]
    v_Q1 = valid_Q[:, None]
    nonblank_QK = jnp.maximum(jnp.where(v_Q1, new_nonblank, nonblank_QK), NEG)
    blank_QK = jnp.maximum(jnp.where(v_Q1, new_blank, blank_QK), NEG)
    psi_Q = jnp.where(valid_Q, jnp.logaddexp(psi_Q, enter_Q), psi_Q)
    out = (jnp.take_along_axis(nonblank_QK, last_Q1, axis=1)[:, 0],
           jnp.take_along_axis(blank_QK, last_Q1, axis=1)[:, 0])
    return (nonblank_QK, blank_QK, psi_Q), out

  init = (jnp.full((q, k), NEG, jnp.float32), jnp.full((q, k), NEG, jnp.float32),
          jnp.full((q,), NEG, jnp.float32))
  xs = (r_nb_QT[:, :-1].T, r_b_QT[:, :-1].T, jnp.moveaxis(x_label_QTK, 1, 0),
        x_blank_QT.T, valid_QT.T)
  (_, _, psi_Q), (nonblank_TQ, blank_TQ) = jax.lax.scan(frame, init, xs)
  head = jnp.full((q, 1), NEG, jnp.float32)
  alive_Q1 = (count_Q > 0)[:, None]
  nonblank_QT = jnp.where(alive_Q1, jnp.concatenate([head, nonblank_TQ.T], axis=1), NEG)
  blank_QT = jnp.where(alive_Q1, jnp.concatenate([head, blank_TQ.T], axis=1), NEG)
  last_Q = jnp.take_along_axis(labels_QK, last_Q1, axis=1)[:, 0]
  psi_Q = jnp.where(count_Q > 0, jnp.maximum(psi_Q, NEG), NEG)
  return PrefixState(nonblank_QT, blank_QT, last_Q), psi_Q.astype(jnp.float32)
