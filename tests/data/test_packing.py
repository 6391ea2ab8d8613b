"""Packing: no segment mixing, every token exactly once and in order, contract-5 fields."""
import numpy as np
import pytest

from slm_jax.data import cache
from slm_jax.data.pipeline import documents, grain_pipeline
from slm_jax.data.synthetic import synthetic_examples
from slm_jax.unified_vocab import BOS_ID, UnifiedVocab

L = 64


def _vocab(k):
  return UnifiedVocab(text_size=100, speech_codebook_sizes=(64,) + (16,) * (k - 1))


def _cache(tmp_path, vocab, num=60, mean_len=30, seed=0, name="c", max_len=3 * L):
  exs = list(synthetic_examples(vocab, num, mean_len=mean_len, seed=seed, max_len=max_len))
  cache.write_cache(exs, str(tmp_path / name), vocab, task=name, progress=False)
  return str(tmp_path / name), exs


def _expected_pieces(exs, policy="split"):
  out = []
  for ex in exs:
    doc = documents.to_document(ex)
    out += documents.LongDocumentPolicy(L, policy, max_pieces=8).flat_map(doc)
  return out


def _key(doc):
  return tuple(doc["tokens"].tolist())


def _all_rows(cache_dir, vocab, policy="split", packing="first_fit"):
  it = grain_pipeline.make_grain_eval_iterator([cache_dir], seq_len=L, batch_size=4, vocab=vocab,
                                               packing=packing, num_packing_bins=4,
                                               long_documents=policy, max_pieces=8,
                                               process_index=0, process_count=1)
  return list(it), it


@pytest.mark.parametrize("k,packing", [(1, "first_fit"), (3, "first_fit"), (3, "best_fit")])
def test_packing_keeps_every_token_once_in_order(tmp_path, k, packing):
  vocab = _vocab(k)
  d, exs = _cache(tmp_path, vocab)
  batches, _ = _all_rows(d, vocab, packing=packing)
  b0 = batches[0]
  assert b0["tokens"].shape == (4, L) and b0["tokens"].dtype == np.int32
  assert b0["loss_weights"].dtype == np.float32
  if k > 1:
    assert b0["speech_codes"].shape == b0["target_speech_codes"].shape == (4, L, k - 1)
  else:
    assert "speech_codes" not in b0
  got = documents.documents_from_rows(batches)
  want = _expected_pieces(exs)
  assert len(got) == len(want)
  by_key = {}
  for doc in want:
    by_key.setdefault(_key(doc), []).append(doc)
  for doc in got:
    ref = by_key[_key(doc)].pop()  # KeyError: a document was mixed or altered
    for name in ("targets", "loss_weights") + (documents.CODE_FEATURES if k > 1 else ()):
      np.testing.assert_array_equal(doc[name], ref[name], err_msg=name)
    np.testing.assert_array_equal(doc["positions"], np.arange(len(doc["tokens"])))
  assert all(not v for v in by_key.values())  # each piece exactly once


def test_shift_and_padding_semantics(tmp_path):
  vocab = _vocab(3)
  d, exs = _cache(tmp_path, vocab, num=20, mean_len=20, max_len=L + 1)  # no splitting here
  batches, _ = _all_rows(d, vocab)
  for b in batches:
    seg, tok, tgt = b["segment_ids"], b["tokens"], b["targets"]
    pad = seg == 0
    assert (b["loss_weights"][pad] == 0).all() and (tok[pad] == 0).all() and (tgt[pad] == 0).all()
    assert (b["speech_codes"][pad] == 0).all()
    # inside a document, targets are the next input token
    same = (seg[:, 1:] == seg[:, :-1]) & (seg[:, 1:] > 0)
    np.testing.assert_array_equal(tgt[:, :-1][same], tok[:, 1:][same])
    np.testing.assert_array_equal(b["target_speech_codes"][:, :-1][same], b["speech_codes"][:, 1:][same])
    # segment ids count 1.. in each row; every document starts at position 0 with BOS
    starts = b["positions"] == 0
    assert (tok[starts & ~pad] == BOS_ID).all()
    for row in seg:
      ids = row[row > 0]
      assert ids[0] == 1 and set(np.diff(ids)) <= {0, 1}


@pytest.mark.parametrize("policy", ["split", "drop", "truncate"])
def test_long_document_policy(tmp_path, policy):
  vocab = _vocab(1)
  d, exs = _cache(tmp_path, vocab, num=30, mean_len=60)  # many documents exceed L=64
  long = [ex for ex in exs if len(ex["tokens"]) - 1 > L]
  assert long, "the fixture must contain documents longer than L"
  batches, it = _all_rows(d, vocab, policy=policy)
  got = documents.documents_from_rows(batches)
  want = _expected_pieces(exs, policy)
  assert sorted(map(_key, got)) == sorted(map(_key, want))
  total = sum(len(ex["tokens"]) - 1 for ex in exs)
  kept = sum(len(doc["tokens"]) for doc in got)
  stats = it.stats()
  if policy == "split":
    assert kept == total and stats["long_documents_split"] == len(long)
  elif policy == "drop":
    assert stats["long_documents_dropped"] == len(long) and kept == total - stats["tokens_dropped"]
  else:
    assert kept == total - stats["tokens_dropped"] and stats["tokens_dropped"] > 0


def test_too_many_pieces_is_a_clear_error():
  doc = documents.to_document({"tokens": np.arange(1000) % 50 + 2, "loss_mask": np.ones(1000)})
  with pytest.raises(ValueError, match="max_pieces"):
    documents.LongDocumentPolicy(64, "split", max_pieces=4).flat_map(doc)
