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
  r_nb_NT = state.r_nonblank_NT[parent_N]
  r_b_NT = state.r_blank_NT[parent_N]
  last_N = state.last_N[parent_N]
  n = label_N.shape[0]
  x_label_NT = jnp.take_along_axis(logp_NTC, label_N[:, None, None], axis=2)[..., 0]
  x_blank_NT = logp_NTC[..., 0]
  phi_NT = jnp.logaddexp(r_b_NT[:, :-1], jnp.where((label_N == last_N)[:, None], NEG,
                                                   r_nb_NT[:, :-1]))

  def frame(carry, xs):
    nonblank_N, blank_N = carry
    phi_N, x_label_N, x_blank_N, valid_N = xs
    new_nonblank = jnp.logaddexp(nonblank_N, phi_N) + x_label_N
    new_blank = jnp.logaddexp(blank_N, nonblank_N) + x_blank_N
    carry = (jnp.where(valid_N, new_nonblank, nonblank_N), jnp.where(valid_N, new_blank, blank_N))
    return carry, carry

  init = (jnp.full((n,), NEG, jnp.float32), jnp.full((n,), NEG, jnp.float32))
  xs = (phi_NT.T, x_label_NT.T, x_blank_NT.T, valid_NT.T)
  _, (nonblank_TN, blank_TN) = jax.lax.scan(frame, init, xs)
  head = jnp.full((n, 1), NEG, jnp.float32)
  nonblank_NT = jnp.concatenate([head, nonblank_TN.T], axis=1)
  blank_NT = jnp.concatenate([head, blank_TN.T], axis=1)
  alive_N1 = (label_N > 0)[:, None]
  return PrefixState(jnp.maximum(jnp.where(alive_N1, nonblank_NT, NEG), NEG),
                     jnp.maximum(jnp.where(alive_N1, blank_NT, NEG), NEG), label_N.astype(jnp.int32))
