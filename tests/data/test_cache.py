"""ArrayRecord cache: record round trip, atomic writes, contract checks, vocabulary check."""
import json
import os

import numpy as np
import pytest

from slm_jax.data import cache
from slm_jax.data.cache import records
from slm_jax.data.pipeline import grain_pipeline
from slm_jax.data.synthetic import synthetic_examples
from slm_jax.unified_vocab import UnifiedVocab, VocabMismatchError

VOCAB = UnifiedVocab(text_size=100, speech_codebook_sizes=(64, 16, 8))


def test_record_round_trip():
  for ex in synthetic_examples(VOCAB, 5, mean_len=20):
    back = records.decode(records.encode(ex))
    for k in ("tokens", "loss_mask", "speech_codes"):
      np.testing.assert_array_equal(back[k], ex[k])
  k1 = records.decode(records.encode({"tokens": [2, 5, 1], "loss_mask": [0, 1, 1]}))
  assert set(k1) == {"tokens", "loss_mask"}
  with pytest.raises(records.RecordFormatError, match="not an slm_jax cache record"):
    records.decode(b"XXXX" + bytes(8))


def test_cache_files_and_info(tmp_path):
  exs = list(synthetic_examples(VOCAB, 25, mean_len=20))
  info = cache.write_cache(exs, str(tmp_path / "c"), VOCAB, task="t", split="train", num_shards=4,
                           progress=False)
  assert info.num_examples == 25 and sum(info.shard_counts) == 25 and len(info.shards) == 4
  assert info.num_tokens == sum(len(e["tokens"]) for e in exs) and info.num_channels == 3
  on_disk = json.load(open(tmp_path / "c" / cache.INFO_FILENAME))
  assert on_disk["task"] == "t" and on_disk["num_examples"] == 25
  assert UnifiedVocab.load(str(tmp_path / "c")) == VOCAB
  assert cache.open_cache(str(tmp_path / "c"), VOCAB).shard_counts == info.shard_counts
  with pytest.raises(FileExistsError, match="--overwrite"):
    cache.write_cache(exs, str(tmp_path / "c"), VOCAB, task="t", progress=False)
  info2 = cache.write_cache(exs[:5], str(tmp_path / "c"), VOCAB, task="t", overwrite=True,
                            progress=False)
  assert cache.open_cache(str(tmp_path / "c")).num_examples == info2.num_examples == 5


def test_interrupted_cache_is_never_complete(tmp_path):
  def dying():
    yield from synthetic_examples(VOCAB, 10, mean_len=20)
    raise KeyboardInterrupt("killed")
  with pytest.raises(KeyboardInterrupt):
    cache.write_cache(dying(), str(tmp_path / "c"), VOCAB, task="t", progress=False)
  assert not (tmp_path / "c").exists()
  (tmp,) = [p for p in os.listdir(tmp_path) if ".tmp-" in p]
  with pytest.raises(cache.IncompleteCacheError, match="interrupted"):
    cache.open_cache(str(tmp_path / tmp))
  with pytest.raises(cache.IncompleteCacheError, match="slm-data cache"):
    grain_pipeline.make_grain_iterator([str(tmp_path / tmp)], seq_len=32, batch_size=1, vocab=VOCAB,
                                       process_index=0, process_count=1)


def test_vocab_mismatch_is_refused(tmp_path):
  cache.write_cache(synthetic_examples(VOCAB, 5, mean_len=20), str(tmp_path / "c"), VOCAB, task="t",
                    progress=False)
  model_vocab = UnifiedVocab(text_size=200, speech_codebook_sizes=(64, 16, 8))
  with pytest.raises(VocabMismatchError, match="text_size: expected 200"):
    grain_pipeline.make_grain_iterator([str(tmp_path / "c")], seq_len=32, batch_size=1,
                                       vocab=model_vocab, process_index=0, process_count=1)


@pytest.mark.parametrize("bad,match", [
    ({"tokens": [5, 6, 1]}, "start with BOS"),
    ({"tokens": [2, VOCAB.size, 1]}, "outside"),
    ({"loss_mask": [1.0]}, "loss_mask"),
    ({"speech_codes": np.zeros((3, 1), np.int32)}, "speech_codes must be int"),
    ({"speech_codes": np.full((3, 2), 9, np.int32)}, "codebook sizes"),
])
def test_examples_breaking_the_contract_are_named(tmp_path, bad, match):
  ex = {"tokens": np.array([2, 100, 1]), "loss_mask": np.ones(3, np.float32),
        "speech_codes": np.zeros((3, 2), np.int32)}
  ex.update({k: np.asarray(v) for k, v in bad.items()})
  good = list(synthetic_examples(VOCAB, 3, mean_len=20))
  with pytest.raises(cache.ExampleError, match=match) as e:
    cache.write_cache(good + [ex], str(tmp_path / "c"), VOCAB, task="t", progress=False)
  assert "example 3" in str(e.value)
  assert os.listdir(tmp_path) == []  # neither a cache nor a leftover temp directory
