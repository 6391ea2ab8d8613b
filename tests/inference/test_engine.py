"""The generation engine: cached decoding equals full recomputation; slots are independent."""
import jax.numpy as jnp
import numpy as np
import pytest

from slm_jax.inference import sampling
from slm_jax.inference.engine import Engine, PromptError
from slm_jax.inference.reference import greedy_uncached
from slm_jax.models.build import build
from slm_jax.models.config import ModelConfig
from slm_jax.unified_vocab import BOS_ID, UnifiedVocab

MAX_LEN = 48


def tiny(k_sizes=(24,), **kw):
  vocab = UnifiedVocab(text_size=40, speech_codebook_sizes=tuple(k_sizes))
  base = dict(vocab=vocab, num_layers=2, embed_dim=32, num_heads=4, num_kv_heads=2, head_dim=8,
              mlp_dim=64, init_std=0.3, attention_impl="xla")
  base.update(kw)
  return ModelConfig(**base)


def prompts(vocab, lengths, seed=0):
  rng = np.random.default_rng(seed)
  out = []
  for n in lengths:
    body = rng.integers(vocab.text_start, vocab.size, n - 1)
    out.append(np.concatenate([[BOS_ID], body]).astype(np.int32))
  return out


def run_engine(engine, prompt_list, max_new, mode="any", codes=None, seeds=None):
  """Prefill each prompt into its own slot, generate until all are done; tokens per slot."""
  state = engine.init_decode_state()
  outs = []
  seeds = seeds or list(range(len(prompt_list)))
  for slot, p in enumerate(prompt_list):
    prefix = engine.prefill(p, None if codes is None else codes[slot], seed=seeds[slot], mode=mode,
                            max_new_tokens=max_new)
    outs.append(([int(prefix.token_B[0])], [np.asarray(prefix.codes_BK[0])]))
    state = engine.insert(prefix, state, slot)
  while bool(state.active_B.any()):
    state, out = engine.generate(state)
    emitted = np.asarray(out.emitted_NB)
    for step in range(emitted.shape[0]):
      for slot in range(len(prompt_list)):
        if emitted[step, slot]:
          outs[slot][0].append(int(out.tokens_NB[step, slot]))
          outs[slot][1].append(np.asarray(out.codes_NBK[step, slot]))
  return outs


@pytest.mark.parametrize("cfg_kw", [
    dict(),                                                   # K = 1, scanned
    dict(scan_layers=False, text_tower_layers=1, speech_tower_layers=1),
    dict(k_sizes=(24, 16, 8)),                                # K = 3 speech channels
    dict(k_sizes=(16,) * 6, speech_readout_frames=3),         # 3 frames of 2, read in turn
], ids=["k1", "towers_unrolled", "k3", "k6_sequential"])
def test_cached_greedy_equals_full_recomputation(cfg_kw):
  model = build(tiny(**cfg_kw), seed=1)
  engine = Engine(model, slots=4, max_length=MAX_LEN, steps_per_call=5, stop_ids=())
  ps = prompts(model.cfg.vocab, [3, 9, 17, 6])
  k_extra = model.cfg.vocab.num_channels - 1
  codes = None
  if k_extra:
    rng = np.random.default_rng(3)
    codes = [rng.integers(0, 8, (p.size, k_extra)).astype(np.int32) for p in ps]
  outs = run_engine(engine, ps, max_new=12, codes=codes)
  for i, p in enumerate(ps):
    ref_tokens, ref_codes = greedy_uncached(model, p, 12, MAX_LEN, stop_ids=(),
                                            prompt_codes=None if codes is None else codes[i])
    np.testing.assert_array_equal(outs[i][0], ref_tokens, err_msg=f"prompt {i}")
    if k_extra:
      np.testing.assert_array_equal(np.stack(outs[i][1]), ref_codes)


def test_rows_are_independent_and_slots_reuse():
  """A request's sampled tokens depend on its seed only: not on its slot, its neighbours, or
  the requests that used its slot before."""
  model = build(tiny(), seed=2)
  engine = Engine(model, slots=3, max_length=MAX_LEN, steps_per_call=4, stop_ids=(),
                  sampling_config=sampling.SamplingConfig(temperature=1.0, top_k=10))
  ps = prompts(model.cfg.vocab, [5, 11, 7], seed=4)
  together = run_engine(engine, ps, max_new=9, seeds=[0, 1, 2])
  state = engine.init_decode_state()
  state = engine.insert(engine.prefill(ps[2], seed=9, max_new_tokens=3), state, 0)
  state = engine.insert(engine.prefill(ps[0], seed=8, max_new_tokens=2), state, 2)
  state, _ = engine.generate(state)                   # slot 2 held another request first
  assert not bool(state.active_B[2])
  state = engine.insert(engine.prefill(ps[1], seed=1, max_new_tokens=9), state, 2)
  tokens = [int(state.token_B[2])]
  while bool(state.active_B[2]):
    state, out = engine.generate(state)
    tokens += [int(t) for t, e in zip(out.tokens_NB[:, 2], out.emitted_NB[:, 2]) if e]
    if not bool(state.active_B[0]):   # slot 0 finished: a new request takes it (slot reuse)
      state = engine.insert(engine.prefill(ps[0], seed=5, max_new_tokens=9), state, 0)
  assert tokens == together[1][0]
  assert len(set(tokens)) > 1                          # really sampled, not a constant


def test_stop_tokens_and_budgets():
  model = build(tiny(), seed=3)
  ps = prompts(model.cfg.vocab, [4, 8])
  engine = Engine(model, slots=2, max_length=MAX_LEN, steps_per_call=3, stop_ids=())
  outs = run_engine(engine, ps, max_new=7)
  assert [len(o[0]) for o in outs] == [7, 7]
  stop = outs[0][0][3]                        # greedy: stop at the 4th token of row 0
  engine = Engine(model, slots=2, max_length=MAX_LEN, steps_per_call=3, stop_ids=(stop,))
  outs2 = run_engine(engine, ps, max_new=7)
  first = outs[0][0].index(stop)
  assert outs2[0][0] == outs[0][0][:first + 1]
  # the cache bounds generation: a prompt of 45 in 48 slots feeds 3 more positions, and the
  # token sampled from the last one is emitted too (it never needs a slot)
  long_p = prompts(model.cfg.vocab, [45])[0]
  out = run_engine(Engine(model, slots=1, max_length=MAX_LEN, stop_ids=()), [long_p], max_new=20)
  assert len(out[0][0]) == MAX_LEN - 45 + 1


def test_modality_mode_holds():
  model = build(tiny(), seed=4)
  vocab = model.cfg.vocab
  engine = Engine(model, slots=2, max_length=MAX_LEN, steps_per_call=4, stop_ids=(),
                  sampling_config=sampling.SamplingConfig(temperature=2.0))
  ps = prompts(vocab, [5, 6])
  for mode, check in (("text", vocab.is_text), ("speech", vocab.is_speech)):
    for tokens, _ in run_engine(engine, ps, max_new=10, mode=mode):
      arr = np.asarray(tokens)
      assert np.all(check(arr) | (arr == 1)), (mode, arr)


def test_prompt_errors():
  model = build(tiny(), seed=0)
  engine = Engine(model, slots=1, max_length=16)
  with pytest.raises(PromptError, match="empty"):
    engine.prefill([])
  with pytest.raises(PromptError, match="cache holds 16"):
    engine.prefill(np.full(16, 5))
  with pytest.raises(PromptError, match="prompt ids"):
    engine.prefill([BOS_ID, model.cfg.vocab.size])
  assert "KV cache" in engine.memory_report()
  assert engine.cache_bytes() == 2 * 2 * 1 * 16 * 2 * 8 * 4 + 3 * 16 * 4 - 16 * 3  # k,v + slots


def test_bf16_cache_close_to_f32():
  model = build(tiny(), seed=5)
  ps = prompts(model.cfg.vocab, [6])
  f32 = Engine(model, slots=1, max_length=MAX_LEN, stop_ids=())
  bf16 = Engine(model, slots=1, max_length=MAX_LEN, stop_ids=(), cache_dtype="bfloat16")
  assert bf16.cache_bytes() < 0.6 * f32.cache_bytes()
  a = f32.prefill(ps[0])
  b = bf16.prefill(ps[0])
  assert b.cache.stacks["decoder"].k_YBGSE.dtype == jnp.bfloat16
  np.testing.assert_allclose(np.asarray(b.cache.stacks["decoder"].k_YBGSE, np.float32),
                             np.asarray(a.cache.stacks["decoder"].k_YBGSE), atol=0.05, rtol=0.02)


def test_sharded_engine_equals_single_device():
  """On a data x fsdp x tensor mesh of 8 devices (parameters sharded by their logical axes, the
  cache and activations by the rules) the engine generates what it does on one device."""
  import jax  # pylint: disable=import-outside-toplevel
  from flax import nnx  # pylint: disable=import-outside-toplevel
  from slm_jax import sharding  # pylint: disable=import-outside-toplevel
  model = build(tiny(), seed=7)
  ps = prompts(model.cfg.vocab, [4, 9, 6, 13], seed=2)
  single = run_engine(Engine(model, slots=4, max_length=MAX_LEN, steps_per_call=4, stop_ids=()),
                      ps, max_new=6)
  mesh = sharding.make_mesh({"data": 2, "fsdp": 2, "tensor": 2})
  graphdef, state = nnx.split(model)
  state = jax.device_put(state, sharding.state_shardings(state, mesh))
  sharded_model = nnx.merge(graphdef, state)
  engine = Engine(sharded_model, slots=4, max_length=MAX_LEN, steps_per_call=4, stop_ids=(),
                  mesh=mesh)
  dstate = engine.init_decode_state()
  k = dstate.cache.stacks["decoder"].k_YBGSE
  assert len(k.sharding.device_set) == 8 and not k.sharding.is_fully_replicated
  assert [t for t, _ in run_engine(engine, ps, max_new=6)] == [t for t, _ in single]
