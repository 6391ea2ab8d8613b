"""WER / CER on hand-made cases with known answers, and the deranged no-learning baseline."""
import pytest

from slm_jax.evaluation import baselines
from slm_jax.evaluation.error_rates import CharErrors, char_errors, error_rates


def test_cer_counts_characters_of_the_normal_form():
  # "kat" vs "cat": one substitution out of 3 characters.
  assert char_errors(["Cat!"], ["kat"]) == CharErrors(1, 0, 0, 3)
  # "the cat" (7 chars) vs "the at": one deletion.
  e = char_errors(["the cat"], ["the at"])
  assert (e.substitutions, e.deletions, e.insertions, e.reference_chars) == (0, 1, 0, 7)
  assert e.cer == pytest.approx(1 / 7)
  # Insertions can push CER above 1.
  assert char_errors(["a"], ["abc"]).cer == pytest.approx(2.0)


def test_corpus_level_not_a_mean_of_utterances():
  # 1 error in 1 char + 0 errors in 9 chars = 1 / 10, not mean(1.0, 0.0) = 0.5.
  rates = error_rates(["a", "bcdefghij"], ["b", "bcdefghij"])
  assert rates.cer == pytest.approx(0.1) and rates.wer == pytest.approx(0.5)


def test_empty_hypothesis_is_all_deletions_of_words_and_characters():
  rates = error_rates(["ab cd", "ef"], ["", "ef"])
  assert rates.words.deletions == 2 and rates.chars.deletions == 5
  assert rates.wer == pytest.approx(2 / 3) and rates.cer == pytest.approx(5 / 7)
  assert error_rates(["hello world"], [" !? "]).cer == 1.0
  d = rates.to_dict()
  assert d["chars"]["reference_chars"] == 7 and d["words"]["reference_words"] == 3


def test_perfect_and_bad_inputs():
  assert error_rates(["Don't panic!"], ["don't panic"]).cer == 0.0
  with pytest.raises(ValueError, match="empty after normalization"):
    char_errors(["ok", "!!"], ["ok", "x"])
  with pytest.raises(ValueError, match="2 references but 1 hypotheses"):
    char_errors(["a", "b"], ["a"])


def test_derangement_never_pairs_an_utterance_with_its_own_sentence():
  keys = ["s1", "s1", "s2", "s2", "s3", "s3", "s4"]      # each sentence spoken by two voices
  perm = baselines.derangement(keys)
  assert sorted(perm.tolist()) == list(range(len(keys)))
  assert all(keys[p] != keys[i] for i, p in enumerate(perm))
  assert (baselines.derangement(keys) == perm).all()      # fixed
  assert baselines.derangement(["only"]) is None


def test_deranged_baseline_separates_listening_from_guessing():
  refs = ["one two three", "four five six", "seven eight nine", "ten eleven twelve"]
  listening = list(refs)                                  # depends on the input: perfect
  guessing = ["one two three"] * 4                        # the same sentence whatever the input
  b = baselines.baselines(refs, listening)
  assert error_rates(refs, listening).wer == 0.0 and b["deranged_wer"] == 1.0
  assert b["empty_cer"] == 1.0
  g = baselines.baselines(refs, guessing)
  assert error_rates(refs, guessing).wer == pytest.approx(0.75)
  assert g["deranged_wer"] == pytest.approx(0.75)          # no better than chance
  assert "deranged_wer" not in baselines.baselines(["a"], ["a"])
