"""The seqio / tf.data path gives the same documents as the numpy documents and the grain
pipeline; a seqio task iterates, resumes and caches."""
import collections

import numpy as np
import pytest

tf = pytest.importorskip("tensorflow")
seqio = pytest.importorskip("seqio")

from slm_jax.data import cache  # noqa: E402
from slm_jax.data.cache.tasks import cache_task  # noqa: E402
from slm_jax.data.pipeline import documents, grain_pipeline, seqio_pipeline  # noqa: E402
from slm_jax.data.synthetic import synthetic_examples  # noqa: E402
from slm_jax.tools.data import describe_row  # noqa: E402
from slm_jax.unified_vocab import UnifiedVocab  # noqa: E402

VOCAB = UnifiedVocab(text_size=100, speech_codebook_sizes=(64, 16, 16))
L = 48
TASK = "test_pipeline_synthetic_k3"


def _examples(split="train"):
  return list(synthetic_examples(VOCAB, 40, mean_len=30, seed=0 if split == "train" else 1,
                                 max_len=2 * L))


def _tf_dataset(exs):
  sig = {"tokens": tf.TensorSpec([None], tf.int32), "loss_mask": tf.TensorSpec([None], tf.float32),
         "speech_codes": tf.TensorSpec([None, 2], tf.int32)}
  return tf.data.Dataset.from_generator(lambda: iter(exs), output_signature=sig)


@pytest.fixture(scope="module")
def task():
  def dataset_fn(split, shuffle_files, seed=None):
    del shuffle_files, seed
    return _tf_dataset(_examples(split))
  vocab = seqio.PassThroughVocabulary(size=VOCAB.size)
  feats = {"tokens": seqio.Feature(vocab, add_eos=False, dtype=tf.int32),
           "loss_mask": seqio.Feature(vocab, add_eos=False, dtype=tf.float32, required=False),
           "speech_codes": seqio.Feature(vocab, add_eos=False, dtype=tf.int32, rank=2,
                                         required=False)}
  if TASK not in seqio.TaskRegistry.names():
    seqio.TaskRegistry.add(TASK, source=seqio.FunctionDataSource(dataset_fn, ["train", "validation"]),
                           preprocessors=[], output_features=feats)
  yield TASK


def _doc_multiset(docs):
  return collections.Counter(
      (tuple(d["tokens"].tolist()), tuple(d["targets"].tolist()), tuple(d["loss_weights"].tolist()),
       tuple(d["speech_codes"].ravel().tolist()), tuple(d["target_speech_codes"].ravel().tolist()),
       tuple(d["positions"].tolist()))
      for d in docs)


def _numpy_documents(exs, policy):
  """What documents.py makes of the examples: the one implementation of shift and policy."""
  fit = documents.LongDocumentPolicy(L, policy)
  docs = [d for ex in exs for d in fit.flat_map(documents.to_document(ex))]
  for d in docs:
    d["positions"] = np.arange(len(d["tokens"]), dtype=np.int32)
  return docs


@pytest.mark.parametrize("policy", ["split", "drop", "truncate"])
def test_tf_path_equals_numpy_documents_and_grain_path(tmp_path, policy):
  exs = _examples()
  assert max(len(ex["tokens"]) for ex in exs) > L + 1  # some documents are longer than a row
  cache.write_cache(exs, str(tmp_path / "c"), VOCAB, task="t", progress=False)
  grain_rows = list(grain_pipeline.make_grain_eval_iterator(
      [str(tmp_path / "c")], seq_len=L, batch_size=1, vocab=VOCAB, long_documents=policy,
      process_index=0, process_count=1))
  tf_rows = list(seqio_pipeline.pack_tf_dataset(_tf_dataset(exs), L, 3, policy)
                 .as_numpy_iterator())
  assert set(tf_rows[0]) == set(grain_rows[0])
  for k, v in tf_rows[0].items():
    assert v.dtype == grain_rows[0][k].dtype and v.shape == grain_rows[0][k].shape[1:], k
  want = _doc_multiset(_numpy_documents(exs, policy))
  got_tf = _doc_multiset(documents.documents_from_rows(tf_rows))
  assert got_tf == want
  assert _doc_multiset(documents.documents_from_rows(grain_rows)) == want
  n = sum(got_tf.values())
  assert {"split": n > len(exs), "drop": n < len(exs), "truncate": n == len(exs)}[policy]


def test_tf_path_with_one_channel():
  vocab = UnifiedVocab(text_size=100, speech_codebook_sizes=(64,))
  exs = list(synthetic_examples(vocab, 20, mean_len=30, seed=3, max_len=2 * L))
  ds = tf.data.Dataset.from_generator(lambda: iter(exs), output_signature={
      "tokens": tf.TensorSpec([None], tf.int32), "loss_mask": tf.TensorSpec([None], tf.float32)})
  rows = list(seqio_pipeline.pack_tf_dataset(ds, L, 1).as_numpy_iterator())
  assert "speech_codes" not in rows[0]
  key = lambda d: (tuple(d["tokens"].tolist()), tuple(d["targets"].tolist()),  # noqa: E731
                   tuple(d["loss_weights"].tolist()))
  got = collections.Counter(key(d) for d in documents.documents_from_rows(rows))
  assert got == collections.Counter(key(d) for d in _numpy_documents(exs, "split"))


def test_seqio_backend_iterator_and_resume(task):
  it = seqio_pipeline.make_seqio_iterator(task, seq_len=L, batch_size=4, seed=5, num_channels=3,
                                          process_index=0, process_count=1)
  b = next(it)
  assert b["tokens"].shape == (4, L) and b["speech_codes"].shape == (4, L, 2)
  want = [next(it) for _ in range(3)]
  again = seqio_pipeline.make_seqio_iterator(task, seq_len=L, batch_size=4, seed=5, num_channels=3,
                                                process_index=0, process_count=1)
  again.set_state(it.get_state() | {"batches": 1})
  for x, y in zip([next(again) for _ in range(3)], want):
    np.testing.assert_array_equal(x["tokens"], y["tokens"])
  with pytest.raises(ValueError, match="backend"):
    again.set_state({"format": grain_pipeline.STATE_FORMAT})


def test_cache_command_on_a_seqio_task(task, tmp_path):
  (info,) = cache_task(task, str(tmp_path / "c"), VOCAB, split="validation", shards=2,
                           progress=False)
  assert info.num_examples == 40 and info.split == "validation"
  rows = list(grain_pipeline.make_grain_eval_iterator([str(tmp_path / "c")], seq_len=L,
                                                      batch_size=2, vocab=VOCAB,
                                                      process_index=0, process_count=1))
  docs = documents.documents_from_rows(rows)
  assert sum(len(d["tokens"]) for d in docs) == info.num_tokens - info.num_examples
  lines = describe_row({k: v[0] for k, v in rows[0].items()}, VOCAB)
  assert lines and "speech[" in "".join(lines) and "text[" in "".join(lines)
