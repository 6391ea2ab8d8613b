"""Word error rate: normalization, S/D/I counts, empty hypotheses, bad references."""
import pytest

from slm_jax.evaluation.wer import WordErrors, word_errors


def test_counts_substitutions_deletions_insertions():
  e = word_errors(["the cat sat on the mat", "hello world"],
                  ["the bat sat on mat", "hello big world"])
  assert (e.substitutions, e.deletions, e.insertions, e.reference_words) == (1, 1, 1, 8)
  assert e.wer == pytest.approx(3 / 8)
  assert "37.5%" in str(e)


def test_normalizes_case_and_punctuation_like_the_corpus():
  assert word_errors(["Don't panic!"], ["don't   PANIC"]).wer == 0.0


def test_empty_hypothesis_deletes_every_reference_word():
  e = word_errors(["a b c", "d e"], ["", "d e"])
  assert (e.substitutions, e.deletions, e.insertions) == (0, 3, 0)
  assert e.wer == pytest.approx(3 / 5)


def test_empty_reference_and_length_mismatch_are_clear_errors():
  with pytest.raises(ValueError, match=r"reference transcripts \[1\] are empty"):
    word_errors(["fine", " ?! "], ["fine", "x"])
  with pytest.raises(ValueError, match="2 references but 1 hypotheses"):
    word_errors(["a", "b"], ["a"])


def test_no_utterances_scores_zero():
  assert word_errors([], []) == WordErrors(0, 0, 0, 0)
