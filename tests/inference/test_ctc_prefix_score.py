"""CTC prefix scores against brute force (every alignment enumerated) and optax.ctc_loss."""
import itertools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from slm_jax.inference import ctc_prefix_score as cps


def _collapse(path):
  out, prev = [], 0
  for c in path:
    if c != prev and c != 0:
      out.append(c)
    prev = c
  return tuple(out)


def _brute_force(logp_TC):
  """{labeling: log P(labeling)} and {prefix: log P(labeling starts with prefix)}."""
  t, c = logp_TC.shape
  full, prefix = {}, {}
  for path in itertools.product(range(c), repeat=t):
    p = float(np.exp(sum(logp_TC[i, k] for i, k in enumerate(path))))
    lab = _collapse(path)
    full[lab] = full.get(lab, 0.0) + p
    for j in range(1, len(lab) + 1):
      prefix[lab[:j]] = prefix.get(lab[:j], 0.0) + p
  return full, prefix


def _state_of(labels, logp_NTC, valid_NT):
  s = cps.initial_state(logp_NTC, valid_NT)
  n = valid_NT.shape[0]
  for lab in labels:
    s = cps.extend(s, logp_NTC, valid_NT, jnp.arange(n), jnp.full((n,), lab, jnp.int32))
  return s


@pytest.mark.parametrize("seed", [0, 1])
def test_prefix_and_end_scores_equal_the_sum_over_every_alignment(seed):
  t, c = 5, 3                                          # blank + 2 labels: 243 alignments
  rng = np.random.default_rng(seed)
  logp_TC = np.asarray(jax.nn.log_softmax(rng.normal(size=(t, c)) * 2.0, axis=-1))
  full, prefix = _brute_force(logp_TC)
  logp = jnp.asarray(logp_TC)[None]
  valid = jnp.ones((1, t), bool)
  for length in range(0, 4):
    for g in itertools.product(range(1, c), repeat=length):
      s = _state_of(g, logp, valid)
      scores = np.asarray(cps.prefix_scores(s, logp, valid))[0]
      end = full.get(tuple(g), 0.0)
      assert scores[0] == pytest.approx(np.log(end) if end else cps.NEG, rel=1e-4, abs=1e-4), g
      for k in range(1, c):
        want = prefix.get(tuple(g) + (k,), 0.0)
        if want > 1e-30:
          assert scores[k] == pytest.approx(np.log(want), abs=1e-4), (g, k)
        else:
          assert scores[k] < -1e20, (g, k)


def test_full_probability_equals_minus_optax_ctc_loss_with_padded_frames():
  rng = np.random.default_rng(3)
  n, t, c = 3, 12, 6
  logits = rng.normal(size=(n, t, c)).astype(np.float32) * 2
  frames = np.array([12, 9, 7])
  labels = [[1, 2, 2, 5], [3, 3, 1], [4]]
  valid = np.arange(t)[None] < frames[:, None]
  logp = jax.nn.log_softmax(jnp.asarray(logits), axis=-1)
  # rows share no label sequence: extend one label at a time (0 = no more labels for that row)
  s = cps.initial_state(logp, jnp.asarray(valid))
  want_len = max(len(x) for x in labels)
  for j in range(want_len):
    lab = jnp.asarray([x[j] if j < len(x) else 0 for x in labels], jnp.int32)
    live = lab > 0
    s2 = cps.extend(s, logp, jnp.asarray(valid), jnp.arange(n), lab)
    s = jax.tree.map(lambda a, b: jnp.where(live.reshape((-1,) + (1,) * (a.ndim - 1)), a, b), s2, s)
  got = np.asarray(cps.end_score(s))
  pad_labels = np.zeros((n, want_len), np.int32)
  label_pad = np.ones((n, want_len), np.float32)
  for i, x in enumerate(labels):
    pad_labels[i, :len(x)], label_pad[i, :len(x)] = x, 0
  loss = optax.ctc_loss(jnp.asarray(logits), jnp.asarray(~valid, jnp.float32),
                        jnp.asarray(pad_labels), jnp.asarray(label_pad))
  np.testing.assert_allclose(got, -np.asarray(loss), rtol=1e-4, atol=1e-4)


def test_a_prefix_never_scores_above_its_parent():
  rng = np.random.default_rng(5)
  logp = jax.nn.log_softmax(jnp.asarray(rng.normal(size=(2, 8, 5)), jnp.float32), axis=-1)
  valid = jnp.ones((2, 8), bool)
  s = _state_of([2, 4], logp, valid)
  parent = _state_of([2], logp, valid)
  parent_score = np.asarray(cps.prefix_scores(parent, logp, valid))[:, 4]
  children = np.asarray(cps.prefix_scores(s, logp, valid))
  assert (children <= parent_score[:, None] + 1e-5).all()
  # the parent's prefix mass is its end probability plus all its extensions
  total = jax.nn.logsumexp(jnp.asarray(children), axis=1)
  np.testing.assert_allclose(np.asarray(total), parent_score, atol=1e-4)


@pytest.mark.parametrize("seed", [0, 1])
def test_extending_by_a_spelled_piece_equals_one_label_at_a_time(seed):
  """extend_pieces (several labels in one pass, rows of different frame counts, pieces of
  different lengths, repeated letters, an empty piece) against `extend` label by label and the
  last label's `prefix_scores`."""
  rng = np.random.default_rng(seed)
  n, t, c = 2, 14, 5
  logp = jax.nn.log_softmax(jnp.asarray(rng.normal(size=(n, t, c)) * 2, jnp.float32), axis=-1)
  valid = jnp.asarray(np.arange(t)[None] < np.array([[14], [9]]))
  parents = _state_of([3], logp, valid)            # both rows: the hypothesis "3"
  pieces = [[3, 3, 1], [2, 0, 0], [4, 1, 4], [3, 2, 0], [0, 0, 0]]
  parent_q = np.array([0, 0, 1, 1, 1])
  state, psi = cps.extend_pieces(parents, logp, valid, jnp.asarray(parent_q),
                                 jnp.asarray(pieces, jnp.int32))
  for q, piece in enumerate(pieces):
    labels = [x for x in piece if x]
    row = parent_q[q]
    if not labels:
      assert psi[q] < -1e20 and (np.asarray(state.r_blank_NT[q]) < -1e20).all()
      continue
    s = jax.tree.map(lambda a: a[row:row + 1], parents)
    lp, v = logp[row:row + 1], valid[row:row + 1]
    for lab in labels[:-1]:
      s = cps.extend(s, lp, v, jnp.arange(1), jnp.array([lab]))
    want_psi = np.asarray(cps.prefix_scores(s, lp, v))[0, labels[-1]]
    s = cps.extend(s, lp, v, jnp.arange(1), jnp.array([labels[-1]]))
    assert float(psi[q]) == pytest.approx(float(want_psi), abs=1e-4)
    np.testing.assert_allclose(np.asarray(state.r_nonblank_NT[q]), np.asarray(s.r_nonblank_NT[0]),
                               rtol=1e-5, atol=1e-4)
    np.testing.assert_allclose(np.asarray(state.r_blank_NT[q]), np.asarray(s.r_blank_NT[0]),
                               rtol=1e-5, atol=1e-4)
    assert int(state.last_N[q]) == labels[-1]
