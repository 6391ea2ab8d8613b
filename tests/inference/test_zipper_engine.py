"""Zipper generation: each tower's cache and the cross caches give what recomputation gives."""
import sys
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "models"))
from zipper_testing import greedy_by_recomputation, mixed_rows, randomize, tiny_zipper  # noqa: E402
from slm_jax.inference.engine import Engine  # noqa: E402
from slm_jax.models.build import build, init_cache  # noqa: E402
from test_engine import run_engine  # noqa: E402

MAX_LEN = 32


@pytest.mark.parametrize("every", [(1, 2), (2, 0)])
def test_cached_forward_equals_recomputation_token_by_token(every):
  model = randomize(build(tiny_zipper(text_every=every[0], speech_every=every[1])), gate=0.6)
  v, k_extra = model.cfg.vocab, model.cfg.num_channels - 1
  n = 20
  tokens = jnp.asarray(mixed_rows(v, n))
  codes = jnp.asarray(np.random.default_rng(1).integers(0, 8, (1, n, k_extra)), jnp.int32)
  codes = jnp.where(v.is_speech(tokens)[..., None], codes, 0)
  seg, pos = jnp.ones((1, n), jnp.int32), jnp.arange(n, dtype=jnp.int32)[None]
  full, full_ch = nnx.jit(lambda m: m.logits(tokens, seg, pos, codes))(model)

  @nnx.jit(static_argnums=(6,))
  def step(m, t, s, p, c, cache, empty):
    h, cache = m.forward_cached(t, s, p, c, cache, empty)
    return m.heads.logits(h), m.heads.channel_logits(h), cache

  cache = init_cache(model.cfg, 1, MAX_LEN)
  got, got_ch = [], []
  # a prompt of 5 at once, then 3 more at once over the cache, then one token at a time
  cuts = [(0, 5, True), (5, 8, False)] + [(i, i + 1, False) for i in range(8, n)]
  for a, b, empty in cuts:
    lg, ch, cache = step(model, tokens[:, a:b], seg[:, a:b], pos[:, a:b], codes[:, a:b], cache, empty)
    got.append(lg)
    got_ch.append(ch)
  np.testing.assert_allclose(np.concatenate(got, 1), full, rtol=1e-4, atol=1e-4)
  np.testing.assert_allclose(np.concatenate(got_ch, 1), full_ch, rtol=1e-4, atol=1e-4)


def test_engine_greedy_equals_recomputation_across_both_towers():
  model = randomize(build(tiny_zipper()), seed=2, gate=0.6, std=0.5)
  v, k_extra = model.cfg.vocab, model.cfg.num_channels - 1
  engine = Engine(model, slots=2, max_length=MAX_LEN, steps_per_call=4, stop_ids=())
  ps = [mixed_rows(v, 6, seed=3)[0], mixed_rows(v, 11, seed=4)[0]]
  rng = np.random.default_rng(5)
  codes = [rng.integers(0, 8, (p.size, k_extra)).astype(np.int32) for p in ps]
  outs = run_engine(engine, ps, max_new=10, codes=codes)
  towers = set()
  for i, p in enumerate(ps):
    toks, cds = greedy_by_recomputation(model, p, codes[i], 10, MAX_LEN)
    np.testing.assert_array_equal(outs[i][0], toks, err_msg=f"prompt {i}")
    np.testing.assert_array_equal(np.stack(outs[i][1]), cds)
    # the tower of each emitted token: the one holding the position it was predicted from
    for prev in [int(p[-1])] + toks[:-1]:
      towers.add(bool(v.is_speech(prev) or prev == v.special_id("[SPEECH]")))
  assert towers == {True, False}     # both towers emitted some of the tokens
