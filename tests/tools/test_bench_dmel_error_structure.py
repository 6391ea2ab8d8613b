"""bench/dmel_error_structure.py: each perturbation does what its row says, on levels with known
answers (the bench's table is only as good as these)."""
import numpy as np


def _levels(t=12, m=80, seed=0):
  return np.random.default_rng(seed).integers(1, 14, size=(t, m)).astype(np.float64)


def test_one_step_moves_every_level_by_exactly_one(load_bench):
  bench = load_bench("dmel_error_structure")
  x = _levels()
  y = bench._steps(x, np.random.default_rng(1), 15)
  np.testing.assert_array_equal(np.abs(y - x), 1.0)
  edge = bench._steps(np.zeros((4, 80)), np.random.default_rng(1), 15)
  assert edge.min() == 0.0 and set(np.unique(edge)) <= {0.0, 1.0}   # clipped at level 0


def test_noise_is_rounded_shared_within_positions_or_across_bins(load_bench):
  bench = load_bench("dmel_error_structure")
  x = _levels(t=4000)
  rounded = bench._noise(x, np.random.default_rng(2), 15)
  np.testing.assert_array_equal(rounded, np.rint(rounded))
  continuous = bench._noise(x, np.random.default_rng(2), 15, rounded=False)
  assert not np.array_equal(continuous, np.rint(continuous))
  assert abs((continuous - x).std() - 1.0) < 0.05
  shared = bench._noise(np.full((8, 80), 7.0), np.random.default_rng(3), 15, rounded=False,
                        per_position=4)
  np.testing.assert_array_equal(shared[0], shared[3])       # one draw for the 4 frames
  assert not np.array_equal(shared[3], shared[4])           # the next position draws again
  bins = bench._noise(np.full((4000, 80), 7.0), np.random.default_rng(4), 15, rounded=False,
                      across_bins=True) - 7.0
  neighbours = np.corrcoef(bins[:, 10], bins[:, 11])[0, 1]
  assert abs(neighbours - 2 / 3) < 0.05 and abs(bins.std() - 1.0) < 0.05


def test_run_means_and_delay(load_bench):
  bench = load_bench("dmel_error_structure")
  x = _levels(t=10)
  y = bench._mean_runs(x, 4)
  np.testing.assert_allclose(y[:4], np.repeat(x[:4].mean(0, keepdims=True), 4, axis=0))
  np.testing.assert_array_equal(y[8:], x[8:])               # the partial last run is kept
  np.testing.assert_allclose(y[:8].sum(0), x[:8].sum(0))    # means keep each run's sum
  d = bench._delayed(x, 4)
  np.testing.assert_array_equal(d[4:], x[:-4])
  np.testing.assert_array_equal(d[:4], np.repeat(x[:1], 4, axis=0))
  assert len(bench.cases(4)) == 9
