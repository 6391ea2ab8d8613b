"""grain pipeline: exact resume, per-process coverage, mixing rates, state policies."""
import collections
import json

import numpy as np
import pytest

from slm_jax.data import cache
from slm_jax.data.pipeline import documents, grain_pipeline
from slm_jax.data.synthetic import synthetic_examples
from slm_jax.unified_vocab import UnifiedVocab

VOCAB = UnifiedVocab(text_size=100, speech_codebook_sizes=(64, 16))
L = 64


@pytest.fixture(scope="module")
def caches(tmp_path_factory):
  root = tmp_path_factory.mktemp("caches")
  out = {}
  for name, num, seed in (("a", 90, 1), ("b", 50, 2)):
    exs = list(synthetic_examples(VOCAB, num, mean_len=25, seed=seed, max_len=L + 1))
    cache.write_cache(exs, str(root / name), VOCAB, task=name, num_shards=3, progress=False)
    out[name] = (str(root / name), exs)
  return out


def _make(caches, names=("a", "b"), rates=(0.75, 0.25), **kw):
  args = dict(seq_len=L, batch_size=4, seed=3, vocab=VOCAB, num_packing_bins=4,
              process_index=0, process_count=1)
  args.update(kw)
  return grain_pipeline.make_grain_iterator([caches[n][0] for n in names], list(rates), **args)


def _take(it, n):
  return [next(it) for _ in range(n)]


def _assert_same(xs, ys):
  assert len(xs) == len(ys)
  for x, y in zip(xs, ys):
    assert x.keys() == y.keys()
    for k in x:
      np.testing.assert_array_equal(x[k], y[k], err_msg=k)


@pytest.mark.parametrize("prefetch", [0, 2])
def test_resume_equals_uninterrupted(caches, prefetch):
  uninterrupted = _take(_make(caches, prefetch=prefetch), 9)
  it = _make(caches, prefetch=prefetch)
  _take(it, 5)
  state = json.loads(json.dumps(it.get_state()))  # what the checkpoint stores
  fresh = _make(caches, prefetch=prefetch)
  fresh.set_state(state)
  _assert_same(_take(fresh, 4), uninterrupted[5:])
  assert fresh.get_state()["batches"] == 9


def test_batch_keys_and_local_batch(caches):
  b = next(_make(caches, batch_size=8, process_index=1, process_count=2))
  assert set(b) == {"tokens", "targets", "loss_weights", "segment_ids", "positions", "speech_codes",
                    "target_speech_codes"}
  assert b["tokens"].shape == (4, L) and b["speech_codes"].shape == (4, L, 1)
  with pytest.raises(ValueError, match="not divisible"):
    _make(caches, batch_size=6, process_count=4)


def _epoch_docs(caches, name, index, count, seed=3):
  it = grain_pipeline.make_grain_iterator([caches[name][0]], seq_len=L, batch_size=count, seed=seed,
                                          vocab=VOCAB, num_epochs=1, num_packing_bins=4,
                                          process_index=index, process_count=count)
  return [tuple(d["tokens"].tolist()) for d in documents.documents_from_rows(list(it))]


@pytest.mark.parametrize("count", [2, 4])
def test_process_shards_cover_data_exactly_once(caches, count):
  seen = []
  per_process = []
  for index in range(count):
    docs = _epoch_docs(caches, "a", index, count)
    per_process.append(set(docs))
    seen += docs
  want = [tuple(documents.to_document(ex)["tokens"].tolist()) for ex in caches["a"][1]]
  assert collections.Counter(seen) == collections.Counter(want)
  for i in range(count):
    for j in range(i + 1, count):
      assert not per_process[i] & per_process[j]


def test_epochs_are_reshuffled(caches):
  it = grain_pipeline.make_grain_iterator([caches["a"][0]], seq_len=L, batch_size=1, seed=3,
                                          vocab=VOCAB, num_epochs=2, num_packing_bins=1,
                                          shuffle_bins=False, process_index=0, process_count=1)
  docs = [tuple(d["tokens"].tolist()) for d in documents.documents_from_rows(list(it))]
  n = len(caches["a"][1])
  assert len(docs) == 2 * n and sorted(docs[:n]) == sorted(docs[n:]) and docs[:n] != docs[n:]


def test_mixing_rates_are_respected(caches):
  keys_a = {tuple(documents.to_document(ex)["tokens"].tolist()) for ex in caches["a"][1]}
  docs = documents.documents_from_rows(_take(_make(caches, rates=(0.75, 0.25)), 60))
  frac_a = np.mean([tuple(d["tokens"].tolist()) in keys_a for d in docs])
  assert len(docs) > 400 and abs(frac_a - 0.75) < 0.06


def test_process_count_change_policy(caches):
  it = _make(caches, batch_size=4, process_index=0, process_count=2)
  _take(it, 3)
  state = json.loads(json.dumps(it.get_state()))
  with pytest.raises(grain_pipeline.ProcessCountChangedError, match="2 processes, this run has 4"):
    _make(caches, batch_size=4, process_index=0, process_count=4).set_state(state)
  restarted = _make(caches, batch_size=4, process_index=0, process_count=4,
                    on_process_count_change="restart")
  restarted.set_state(state)
  after = _take(restarted, 2)
  plain = _take(_make(caches, batch_size=4, process_index=0, process_count=4), 2)
  assert not np.array_equal(after[0]["tokens"], plain[0]["tokens"])  # fresh permutation
  # the restarted run is itself exactly resumable
  state2 = json.loads(json.dumps(restarted.get_state()))
  want = _take(restarted, 3)
  again = _make(caches, batch_size=4, process_index=0, process_count=4)
  again.set_state(state2)
  _assert_same(_take(again, 3), want)


def test_state_from_other_process_or_config_is_refused(caches):
  state = _make(caches, batch_size=4, process_index=0, process_count=2).get_state()
  with pytest.raises(grain_pipeline.IteratorStateError, match="process 1"):
    _make(caches, batch_size=4, process_index=1, process_count=2).set_state(state)
  with pytest.raises(grain_pipeline.IteratorStateError, match="seq_len"):
    _make(caches, batch_size=4, seq_len=32, process_index=0, process_count=2).set_state(state)


def test_vocab_mismatch_is_a_clear_error(caches):
  other = UnifiedVocab(text_size=100, speech_codebook_sizes=(64, 32))
  with pytest.raises(ValueError, match="speech_codebook_sizes"):
    _make(caches, vocab=other)


def test_gin_configures_the_grain_iterator(caches):
  import gin  # pylint: disable=import-outside-toplevel
  gin.parse_config([
      f'make_grain_iterator.cache_dirs = ["{caches["a"][0]}", "{caches["b"][0]}"]',
      "make_grain_iterator.rates = [3, 1]",
      "make_grain_iterator.seq_len = 64",
      "make_grain_iterator.batch_size = 4",
      "make_grain_iterator.seed = 3",
      "make_grain_iterator.num_packing_bins = 4",
  ])
  it = grain_pipeline.make_grain_iterator(vocab=VOCAB, process_index=0, process_count=1)
  _assert_same(_take(it, 2), _take(_make(caches), 2))
