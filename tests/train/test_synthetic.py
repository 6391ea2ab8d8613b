"""The synthetic task: the batch contract, determinism, host shards, iterator state."""
import numpy as np
import pytest

from slm_jax.unified_vocab import UnifiedVocab
from slm_jax.data import batch as data_lib
from slm_jax.data.synthetic import SyntheticTask

VOCAB = UnifiedVocab(text_size=64, speech_codebook_sizes=(32, 16, 8))


def _task(first_row=0, num_rows=4, split="train", seed=0, vocab=VOCAB, **kw):
  shard = data_lib.HostShard(0, 1, first_row, num_rows)
  return SyntheticTask(split=split, batch_size=4, seq_len=48, vocab=vocab, shard=shard, seed=seed, **kw)


def test_batch_contract():
  b = next(_task())
  assert set(b) == {"tokens", "targets", "segment_ids", "positions", "loss_weights", "speech_codes",
                    "target_speech_codes"}
  assert b["tokens"].shape == (4, 48) and b["speech_codes"].shape == (4, 48, 2)
  assert b["tokens"].dtype == np.int32 and b["loss_weights"].dtype == np.float32
  np.testing.assert_array_equal(b["tokens"][:, 1:], b["targets"][:, :-1])
  # positions restart at 0 in every packed document; padding has segment 0 and no weight
  starts = b["positions"] == 0
  assert (b["segment_ids"][starts & (b["segment_ids"] > 0)] > 0).all()
  assert (b["loss_weights"][b["segment_ids"] == 0] == 0).all()
  assert b["loss_weights"].sum() > 0 and (b["segment_ids"].max(1) >= 2).all()
  # extra channels only on speech positions, within their codebooks
  speech = VOCAB.is_speech(b["tokens"])
  assert (b["speech_codes"][~speech] == 0).all()
  assert (b["speech_codes"][..., 0] < 16).all() and (b["speech_codes"][..., 1] < 8).all()


def test_rows_depend_only_on_seed_step_and_row():
  whole = next(_task(0, 4))
  part = next(_task(2, 2))
  for k in whole:
    np.testing.assert_array_equal(whole[k][2:], part[k])
  assert not np.array_equal(next(_task(seed=1))["tokens"], whole["tokens"])
  assert not np.array_equal(next(_task(split="eval"))["tokens"], whole["tokens"])


def test_state_round_trip_continues_the_stream():
  a = _task()
  next(a), next(a)
  saved = a.get_state()
  expected = next(a)
  b = _task()
  b.set_state(saved)
  np.testing.assert_array_equal(next(b)["tokens"], expected["tokens"])
  assert isinstance(data_lib.DataIterator, type) and isinstance(a, data_lib.DataIterator)


def test_answers_follow_the_rules():
  """Weighted targets are predictable: the copy pattern repeats the prompt after [SEP]."""
  t = _task(patterns=("copy",), vocab=UnifiedVocab(text_size=64, speech_codebook_sizes=(32,)))
  b = next(t)
  sep = t.vocab.special_id("[SEP]")
  row = b["tokens"][0]
  seg = b["segment_ids"][0]
  doc = row[seg == 1]
  i = int(np.where(doc == sep)[0][0])
  prompt, answer = doc[2:i], doc[i + 1:]
  np.testing.assert_array_equal(answer[:-1], prompt)
  assert answer[-1] == 1    # EOS
  # weight exactly where the target is an answer symbol or EOS (inputs [SEP] .. last answer symbol)
  w = b["loss_weights"][0][seg == 1]
  assert (w[i:i + len(answer)] == 1).all() and w.sum() == len(answer)


def test_too_short_rows_are_a_clear_error():
  with pytest.raises(ValueError, match="max_len"):
    SyntheticTask(split="train", batch_size=1, seq_len=10, vocab=VOCAB,
                  shard=data_lib.HostShard(0, 1, 0, 1), max_len=12)
