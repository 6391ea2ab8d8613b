"""bench/tts_teacher_forcing.py's readings of the model's logits and its per-frame error column."""
import numpy as np


def test_levels_read_by_argmax_and_rounded_expectation(load_bench):
  bench = load_bench("tts_teacher_forcing")
  logits = np.log(np.array([[0.5, 0.0, 0.5], [0.1, 0.2, 0.7]]) + 1e-12).astype(np.float32)
  np.testing.assert_array_equal(bench._pick(logits, "argmax", None), [0, 2])
  np.testing.assert_array_equal(bench._pick(logits, "mean", None), [1, 2])   # 1.0 and 1.6
  draws = bench._pick(np.repeat(logits[:1], 2000, axis=0), "sample", np.random.default_rng(0))
  assert set(np.unique(draws)) == {0, 2} and abs(draws.mean() - 1.0) < 0.1


def test_error_by_stacked_frame(load_bench):
  bench = load_bench("tts_teacher_forcing")
  truth = np.zeros((5, 3 * 4), np.int32)                     # 3 mel bins, 4 frames a position
  guess = truth.copy()
  guess[:, 3:6] = 1                                          # frame 2 off by one level
  guess[:, 9:12] = 3                                         # frame 4 off by three
  np.testing.assert_allclose(bench._error_by_frame(guess, truth, 3), [0, 1, 0, 3])
  assert bench._error_by_frame(guess, truth, None).size == 0   # not dMel: no column
