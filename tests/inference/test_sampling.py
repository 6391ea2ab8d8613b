"""Sampling: greedy, temperature, top-k, top-p, per-row keys, modality masks."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from slm_jax.inference import sampling
from slm_jax.unified_vocab import EOS_ID, UnifiedVocab


def _logits(b=4, v=50, seed=0):
  return jax.random.normal(jax.random.key(seed), (b, v)) * 3.0


def test_temperature_zero_is_argmax():
  logits = _logits()
  keys = sampling.row_keys(jnp.arange(4))
  np.testing.assert_array_equal(sampling.sample(logits, keys, 0.0), np.argmax(logits, -1))


def test_top_k_never_leaves_the_top_k():
  logits = _logits(b=1, v=40)
  top5 = set(np.argsort(-np.asarray(logits[0]))[:5].tolist())
  keys = sampling.row_keys(jnp.arange(2000))
  draws = jax.vmap(lambda k: sampling.sample(logits, k[None], 1.5, top_k=5))(keys)
  seen = set(np.asarray(draws).ravel().tolist())
  assert seen <= top5 and len(seen) == 5


def test_top_p_keeps_the_nucleus():
  probs = np.array([0.5, 0.3, 0.15, 0.05])
  logits = jnp.log(jnp.asarray(probs))[None]
  kept = np.asarray(sampling.filter_logits(logits, 0, 0.75)[0]) > sampling.NEG_INF / 2
  np.testing.assert_array_equal(kept, [True, True, False, False])   # 0.5 + 0.3 >= 0.75
  kept = np.asarray(sampling.filter_logits(logits, 0, 0.85)[0]) > sampling.NEG_INF / 2
  np.testing.assert_array_equal(kept, [True, True, True, False])
  kept = np.asarray(sampling.filter_logits(logits, 0, 0.1)[0]) > sampling.NEG_INF / 2
  np.testing.assert_array_equal(kept, [True, False, False, False])  # the top id always stays


def test_sampling_matches_the_distribution():
  probs = np.array([0.6, 0.3, 0.1])
  logits = jnp.log(jnp.asarray(probs))[None]
  keys = sampling.row_keys(jnp.arange(4000))
  draws = np.asarray(jax.vmap(lambda k: sampling.sample(logits, k[None], 1.0))(keys)).ravel()
  freq = np.bincount(draws, minlength=3) / draws.size
  np.testing.assert_allclose(freq, probs, atol=0.03)


def test_rows_do_not_depend_on_neighbours():
  logits = _logits(b=3)
  keys = sampling.row_keys(jnp.array([7, 8, 9]))
  full = sampling.sample(logits, keys, 1.0, top_k=10)
  for i in range(3):
    alone = sampling.sample(logits[i:i + 1], keys[i:i + 1], 1.0, top_k=10)
    assert int(alone[0]) == int(full[i])


def test_config_validation():
  with pytest.raises(sampling.SamplingConfigError, match="top_p"):
    sampling.SamplingConfig(top_p=0.0)
  with pytest.raises(sampling.SamplingConfigError, match="temperature"):
    sampling.SamplingConfig(temperature=-1)


def test_modality_masks():
  vocab = UnifiedVocab(text_size=10, speech_codebook_sizes=(6,), num_reserved=12)
  ids = sampling.ModalityIds.from_vocab(vocab)
  padded = vocab.size + 3
  mode = jnp.array([sampling.MODE_ANY, sampling.MODE_TEXT, sampling.MODE_SPEECH,
                    sampling.MODE_FOLLOW, sampling.MODE_FOLLOW])
  modality = jnp.array([0, 0, 0, sampling.MODE_TEXT, sampling.MODE_SPEECH])
  allowed = np.asarray(sampling.allowed_ids(ids, mode, modality, padded))
  v = np.arange(padded)
  text = (v >= vocab.text_start) & (v < vocab.speech_start)
  speech = (v >= vocab.speech_start) & (v < vocab.size)
  eos = v == EOS_ID
  assert not allowed[:, vocab.size:].any() and not allowed[:, 0].any() and not allowed[:, 2].any()
  np.testing.assert_array_equal(allowed[1], text | eos)
  np.testing.assert_array_equal(allowed[2], speech | eos)
  np.testing.assert_array_equal(allowed[3], text | eos | (v == ids.speech_marker))
  np.testing.assert_array_equal(allowed[4], speech | eos | (v == ids.text_marker))
  assert allowed[0, vocab.text_start:vocab.size].all()
  switched = sampling.next_modality(ids, modality, jnp.array([0, 0, 0, ids.speech_marker, 5]))
  assert int(switched[3]) == sampling.MODE_SPEECH and int(switched[4]) == sampling.MODE_SPEECH
  # a masked sample never leaves the allowed set
  logits = jax.random.normal(jax.random.key(1), (5, padded))
  out = sampling.sample(sampling.apply_mask(logits, allowed), sampling.row_keys(jnp.arange(5)), 2.0)
  assert all(allowed[i, int(t)] for i, t in enumerate(out))
