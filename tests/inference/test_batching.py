"""Continuous batching: more requests than slots, each one as if it ran alone; streaming."""
import numpy as np

from slm_jax.inference.batching import Request, run_requests
from slm_jax.inference.engine import Engine
from slm_jax.inference.reference import greedy_uncached
from slm_jax.models.build import build

from test_engine import MAX_LEN, prompts, tiny


def test_more_requests_than_slots_each_as_if_alone():
  model = build(tiny(), seed=6)
  engine = Engine(model, slots=2, max_length=MAX_LEN, steps_per_call=3, stop_ids=())
  budgets = [4, 9, 2, 6, 5]
  ps = prompts(model.cfg.vocab, [3, 12, 5, 7, 20], seed=8)
  requests = [Request(p, max_new_tokens=n, tag=i) for i, (p, n) in enumerate(zip(ps, budgets))]
  streamed = {i: [] for i in range(len(ps))}
  finished = []

  def on_tokens(index, tokens, codes, done):
    assert codes.shape == (tokens.size, 0)
    streamed[index] += tokens.tolist()
    if done:
      finished.append(index)

  results = run_requests(engine, requests, on_tokens=on_tokens)
  assert sorted(finished) == list(range(len(ps)))
  for i, (p, n) in enumerate(zip(ps, budgets)):
    ref, _ = greedy_uncached(model, p, n, MAX_LEN, stop_ids=())
    np.testing.assert_array_equal(results[i].tokens, ref, err_msg=f"request {i}")
    assert streamed[i] == ref.tolist() and results[i].request.tag == i
    assert not results[i].stopped


def test_stop_token_ends_a_request_and_frees_its_slot():
  model = build(tiny(), seed=6)
  ps = prompts(model.cfg.vocab, [3, 12, 5], seed=8)
  ref, _ = greedy_uncached(model, ps[0], 6, MAX_LEN, stop_ids=())
  stop = int(ref[2])
  engine = Engine(model, slots=1, max_length=MAX_LEN, steps_per_call=4, stop_ids=(stop,))
  results = run_requests(engine, [Request(p, max_new_tokens=6) for p in ps])
  first = ref.tolist().index(stop)
  np.testing.assert_array_equal(results[0].tokens, ref[:first + 1])
  assert results[0].stopped
  assert all(r is not None for r in results)
