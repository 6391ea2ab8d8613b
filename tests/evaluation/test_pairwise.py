"""The pairwise harness: scores tied to the training loss, a forced answer, the file layouts."""
import csv
import json
import os

import jax
import numpy as np
import pytest
from flax import nnx

from slm_jax.evaluation import pairwise, pairwise_official, pairwise_sets
from slm_jax.evaluation.eval_sets import EvalInputError
from slm_jax.evaluation.likelihood import LikelihoodScorer
from slm_jax.models import build
from slm_jax.models import loss as loss_lib
from slm_jax.train import step as step_lib
from slm_jax.unified_vocab import UnifiedVocab

import eval_testing  # noqa: E402  pylint: disable=wrong-import-order

VOCAB = UnifiedVocab(text_size=48, speech_codebook_sizes=(24,))
VOCAB_K3 = UnifiedVocab(text_size=48, speech_codebook_sizes=(24, 8, 4))


def _pairs(vocab, n=4, seed=0):
  """Pairs whose negative ending is the positive's content reversed (same length, same tokens)."""
  rng = np.random.default_rng(seed)
  k = vocab.num_channels
  out = []
  for i in range(n):
    text = rng.permutation(np.arange(4, 40))[:5].astype(np.int32)
    frames = np.stack([rng.integers(0, c, 6) for c in vocab.speech_codebook_sizes], 1).astype(np.int32)
    p_text = np.array([1 + i, 2, 3], np.int32)
    p_frames = np.stack([np.full(3, i % c) for c in vocab.speech_codebook_sizes], 1).astype(np.int32)
    assert frames.shape == (6, k)
    out.append(pairwise.TokenizedPair(
        f"p{i}", pairwise.Tokens(text, frames), pairwise.Tokens(text[::-1], frames[::-1]),
        pairwise.Tokens(p_text, p_frames)))
  return out


@pytest.mark.parametrize("vocab", [VOCAB, VOCAB_K3], ids=["K1", "K3"])
def test_score_is_minus_the_training_loss_of_the_same_positions(vocab):
  model = build.build(eval_testing.tiny_config(vocab))
  pair = _pairs(vocab, 1)[0]
  seqs = [pairwise.condition_sequence(vocab, c, pair.positive, pair.prompt)
          for c in pairwise.CONDITIONS]
  scores = LikelihoodScorer(model, batch_size=4).score(seqs)
  graphdef, params = nnx.split(model)
  eval_step = jax.jit(step_lib.make_eval_step(graphdef, loss_options=loss_lib.LossOptions(
      chunk_size=64)))
  for seq, (total, count) in zip(seqs, scores):
    batch = eval_testing.row_batch([(seq.tokens, seq.codes, seq.scored)], 64)
    sums = eval_step(params, batch)
    expected = -float(sums["ce"]) - float(np.sum(sums.get("channel_ce", 0.0)))
    assert count == seq.scored.sum() == float(sums["weight"]) > 0
    assert total == pytest.approx(expected, rel=1e-4, abs=1e-3)


def test_condition_layouts_follow_the_templates():
  pair = _pairs(VOCAB, 1)[0]
  sid = VOCAB.special_id
  seq = pairwise.condition_sequence(VOCAB, "text_to_speech", pair.positive, pair.prompt)
  assert list(seq.tokens[:3]) == [2, sid("[INTERLEAVE]"), sid("[TEXT]")]
  assert seq.tokens[6] == sid("[SPEECH]") and seq.scored[7:].all() and not seq.scored[:7].any()
  seq = pairwise.condition_sequence(VOCAB, "speech", pair.positive, None)
  assert list(seq.tokens[:2]) == [2, sid("[SPEECH_LM]")] and seq.scored.sum() == 6 + 1   # + EOS
  assert pairwise.condition_sequence(VOCAB, "speech_to_text", pair.positive, None) is None
  no_eos = pairwise.condition_sequence(VOCAB, "text", pair.positive, pair.prompt, include_eos=False)
  assert no_eos.scored.sum() == 5


@pytest.mark.slow
def test_a_model_trained_on_the_positives_wins_every_pair_and_swapping_loses_them():
  """The answer is forced: a tiny model trained (in the test) on the positive sequences of every
  condition must prefer them; the same pairs swapped must score 0."""
  pairs = _pairs(VOCAB_K3, 4)
  seqs = []
  for cond in pairwise.CONDITIONS:
    for p in pairs:
      s = pairwise.condition_sequence(VOCAB_K3, cond, p.positive, p.prompt)
      seqs.append((s.tokens, s.codes, s.scored))
  model, final_loss = eval_testing.train_on(eval_testing.tiny_config(VOCAB_K3), seqs, steps=80,
                                            length=32)
  assert final_loss < 1.0
  for normalize in (False, True):
    res = pairwise.score_tokenized(model, pairs, normalize=normalize)
    assert set(res) == set(pairwise.CONDITIONS)
    assert all(r["accuracy"] == 1.0 and r["pairs"] == 4 for r in res.values()), res
  swapped = [pairwise.TokenizedPair(p.id, p.negative, p.positive, p.prompt) for p in pairs]
  res = pairwise.score_tokenized(model, swapped)
  assert all(r["accuracy"] == 0.0 and r["mean_margin"] < 0 for r in res.values()), res


def test_ties_count_half():
  model = build.build(eval_testing.tiny_config(VOCAB))
  same = [pairwise.TokenizedPair("t", p.positive, p.positive, p.prompt) for p in _pairs(VOCAB, 2)]
  res = pairwise.score_tokenized(model, same, conditions=("text",))
  assert res["text"]["accuracy"] == 0.5 and res["text"]["ties"] == 2


def _wav(path):
  import soundfile as sf  # pylint: disable=import-outside-toplevel
  sf.write(path, np.zeros(1600, np.float32), 16000)
  return path


def test_jsonl_and_official_layouts_are_read(tmp_path):
  sets = tmp_path / "sets"
  sets.mkdir()
  _wav(sets / "a.wav")
  (sets / "cloze.jsonl").write_text(json.dumps(
      {"id": "c0", "prompt": {"text": "once upon", "audio": "a.wav"},
       "positive": {"text": "a time"}, "negative": {"text": "the end"}}) + "\n")
  found = pairwise.load_pair_sets(str(sets))
  (p,) = found["cloze"]
  assert p.prompt.audio == str(sets / "a.wav") and p.positive.text == "a time"

  lex = tmp_path / "zr" / "lexical" / "dev"
  lex.mkdir(parents=True)
  rows = [("aa1", "1", "brick", 1, "bob"), ("aa2", "1", "brilk", 0, "bob"),
          ("aa3", "1", "brick", 1, "alice"), ("aa4", "1", "brilk", 0, "alice")]
  with open(lex / "gold.csv", "w", newline="") as f:
    w = csv.writer(f)
    w.writerow(["filename", "id", "word", "correct", "voice"])
    for name, pid, word, correct, voice in rows:
      w.writerow([name, pid, word, correct, voice])
      _wav(lex / f"{name}.wav")
  sc = tmp_path / "zr" / "sSC"
  sc.mkdir()
  for n in range(2):
    _wav(sc / f"{n}_correct.wav")
    _wav(sc / f"{n}_incorrect.wav")
  found = pairwise.load_pair_sets(str(tmp_path / "zr"))
  assert sorted(found) == ["lexical/dev", "sSC"]
  lexical = found["lexical/dev"]
  assert len(lexical) == 2 and lexical[0].positive.text == "brick"
  assert lexical[0].negative.audio.endswith("aa2.wav")
  assert [p.positive.audio.endswith("_correct.wav") for p in found["sSC"]] == [True, True]
  assert all(p.negative.audio.endswith("_incorrect.wav") for p in found["sSC"])
  (tmp_path / "empty").mkdir()
  with pytest.raises(EvalInputError, match="no pair sets"):
    pairwise.load_pair_sets(str(tmp_path / "empty"))
  with pytest.raises(EvalInputError, match="does not exist"):
    pairwise.load_pair_sets(str(tmp_path / "missing"))


def test_storycloze_needs_both_endings(tmp_path):
  _wav(tmp_path / "0_correct.wav")
  with pytest.raises(EvalInputError, match="story 0"):
    pairwise_official.read_storycloze(str(tmp_path))


def test_built_sets_pair_real_and_made_up_content():
  sentences = ["the quick brown fox jumps over the lazy dog today",
               "a journey of a thousand miles begins with one step",
               "never put off until tomorrow what you can do today",
               "the early bird gets the worm but the second mouse gets cheese"]
  lexicon = {w for s in sentences for w in s.split()}
  sets = pairwise_sets.make_pairs(sentences, lexicon, num_pairs=5, seed=0)
  assert len(sets["words"]) == 5 and len(sets["syntax"]) == 4 and len(sets["cloze"]) == 4
  for p in sets["words"]:
    pos, neg = p["positive"]["text"], p["negative"]["text"]
    assert pos in lexicon and neg not in lexicon and len(pos) == len(neg)
    assert sum(a != b for a, b in zip(pos, neg)) == 1
  for p in sets["syntax"]:
    assert sorted(p["positive"]["text"].split()) == sorted(p["negative"]["text"].split())
    assert p["positive"]["text"] != p["negative"]["text"]
  for p in sets["cloze"]:
    full = p["prompt"]["text"] + " " + p["positive"]["text"]
    assert full in sentences and p["negative"]["text"] != p["positive"]["text"]
