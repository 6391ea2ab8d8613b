"""Zipper generation with paired towers: one shared cache layout, each layer's two self-attentions
and each fusion point's two cross-attentions as one cached attention; equal to the per-tower
cached path and to recomputation."""
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from model_testing import tiny
from zipper_testing import greedy_by_recomputation, mixed_rows, randomize, tiny_zipper
from slm_jax.inference.engine import Engine
from slm_jax.models import zipper
from slm_jax.models.build import build, init_cache
from slm_jax.models.zipper_config import TowerConfig

MAX_LEN = 32


def paired_zipper(text_layers=2, speech_layers=2, text_every=1, speech_every=1):
  """Towers of different widths with one head layout (4 heads, 2 kv heads, head dim 8)."""
  return tiny(speech_codebook_sizes=(24, 16, 8), architecture="zipper",
              zipper_text=TowerConfig(text_layers, 32, 4, 2, 8, 64, text_every, True),
              zipper_speech=TowerConfig(speech_layers, 24, 4, 2, 8, 48, speech_every, True))


@nnx.jit(static_argnums=(6,))
def _step(m, t, s, p, c, cache, empty):
  h, cache = m.forward_cached(t, s, p, c, cache, empty)
  return m.heads.logits(h), m.heads.channel_logits(h), cache


def _cached_logits(model, tokens, codes):
  """Prefill 5, continue with 3 over the cache, then one token at a time."""
  b, n = tokens.shape
  seg, pos = jnp.ones((b, n), jnp.int32), jnp.tile(jnp.arange(n, dtype=jnp.int32), (b, 1))
  cache = init_cache(model.cfg, b, MAX_LEN)
  got, got_ch = [], []
  for a, e, empty in [(0, 5, True), (5, 8, False)] + [(i, i + 1, False) for i in range(8, n)]:
    lg, ch, cache = _step(model, tokens[:, a:e], seg[:, a:e], pos[:, a:e], codes[:, a:e], cache,
                          empty)
    got.append(lg)
    got_ch.append(ch)
  return np.concatenate(got, 1), np.concatenate(got_ch, 1), cache


@pytest.mark.parametrize("layers,every", [((2, 2), (1, 1)), ((2, 3), (1, 2))],
                         ids=["equal_towers", "depths_and_every_differ"])
def test_paired_cached_equals_per_tower_cached_and_recomputation(layers, every, monkeypatch):
  model = randomize(build(paired_zipper(*layers, *every)), gate=0.6)
  assert zipper.towers_pair(model.cfg.tower("text"), model.cfg.tower("speech"))
  v, k_extra, n = model.cfg.vocab, model.cfg.num_channels - 1, 20
  tokens = jnp.asarray(mixed_rows(v, n, 2, max_run=3))
  codes = jnp.asarray(np.random.default_rng(1).integers(0, 8, (2, n, k_extra)), jnp.int32)
  codes = jnp.where(v.is_speech(tokens)[..., None], codes, 0)
  seg, pos = jnp.ones((2, n), jnp.int32), jnp.tile(jnp.arange(n, dtype=jnp.int32), (2, 1))
  full, full_ch = nnx.jit(lambda m: m.logits(tokens, seg, pos, codes))(model)

  calls = []
  paired_block = zipper.paired_block
  monkeypatch.setattr(zipper, "paired_block", lambda *a: calls.append(1) or paired_block(*a))
  paired, paired_ch, cache = _cached_logits(model, tokens, codes)
  assert calls and cache.shared        # the paired path ran, over one shared cache layout
  model.paired = False
  calls.clear()
  alone, alone_ch, _ = _cached_logits(model, tokens, codes)
  assert not calls
  np.testing.assert_allclose(paired, alone, rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(paired_ch, alone_ch, rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(paired, full, rtol=1e-4, atol=1e-4)
  np.testing.assert_allclose(paired_ch, full_ch, rtol=1e-4, atol=1e-4)


def test_towers_of_different_head_layouts_keep_their_own_caches():
  cfg = tiny_zipper()
  cache = init_cache(cfg, 1, MAX_LEN)
  assert not cache.shared and set(cache.stacks) == {"text", "speech"}
  shared = init_cache(paired_zipper(), 1, MAX_LEN)
  assert shared.shared and set(shared.stacks) == set(shared.cross) == {"towers"}
  assert shared.stacks["towers"].k_YBGSE.shape == (2, 1, 2, MAX_LEN, 8)


def _engine_tokens(model, prompts, codes, max_new):
  engine = Engine(model, slots=len(prompts), max_length=MAX_LEN, steps_per_call=4, stop_ids=())
  state = engine.init_decode_state()
  outs = []
  for slot, (p, c) in enumerate(zip(prompts, codes)):
    prefix = engine.prefill(p, c, mode="any", max_new_tokens=max_new)
    outs.append([int(prefix.token_B[0])])
    state = engine.insert(prefix, state, slot)
  while bool(state.active_B.any()):
    state, out = engine.generate(state)
    for step, slot in zip(*np.nonzero(np.asarray(out.emitted_NB))):
      outs[slot].append(int(out.tokens_NB[step, slot]))
  return outs


def test_engine_greedy_paired_equals_per_tower_and_recomputation():
  model = randomize(build(paired_zipper()), seed=2, gate=0.6, std=0.5)
  v, k_extra, max_new = model.cfg.vocab, model.cfg.num_channels - 1, 10
  prompts = [mixed_rows(v, 6, seed=3, max_run=3)[0], mixed_rows(v, 11, seed=4, max_run=3)[0]]
  rng = np.random.default_rng(5)
  codes = [rng.integers(0, 8, (p.size, k_extra)).astype(np.int32) for p in prompts]
  paired = _engine_tokens(model, prompts, codes, max_new)
  model.paired = False
  alone = _engine_tokens(model, prompts, codes, max_new)
  assert paired == alone
  towers = set()
  for p, c, got in zip(prompts, codes, paired):
    assert got == greedy_by_recomputation(model, p, c, max_new, MAX_LEN)[0]
    towers |= {bool(v.is_speech(t)) for t in got}
  assert towers == {True, False}       # both towers emitted tokens
