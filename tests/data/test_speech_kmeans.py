"""k-means units: determinism, rate and shape, pooling, dedup, decoding, save/load."""
import numpy as np
import pytest

from slm_jax.data.speech import (KMeansTokenizer, dedup_units, fit_kmeans_tokenizer,
                                 get_speech_tokenizer, kmeans, load_speech_tokenizer)
from slm_jax.data.synthetic import synthetic_speechlike
from slm_jax.data.speech.kmeans import pool_frames, stack_context


def _corpus():
  return [synthetic_speechlike(1.0 + 0.1 * i, 16000, seed=i) for i in range(6)]


@pytest.fixture(scope="module")
def fitted():
  return fit_kmeans_tokenizer(_corpus(), 16000, num_units=32, rate=25.0, seed=0, num_iters=10)


def test_same_seed_same_centroids_and_units(fitted):
  again = fit_kmeans_tokenizer(_corpus(), 16000, num_units=32, rate=25.0, seed=0, num_iters=10)
  np.testing.assert_array_equal(again.centroids, fitted.centroids)
  x = synthetic_speechlike(2.0, 16000, seed=99)
  np.testing.assert_array_equal(again.encode(x, 16000), fitted.encode(x, 16000))
  assert again.name == fitted.name
  other = fit_kmeans_tokenizer(_corpus(), 16000, num_units=32, rate=25.0, seed=1, num_iters=10)
  assert not np.array_equal(other.centroids, fitted.centroids) and other.name != fitted.name


def test_rate_and_shape(fitted):
  assert fitted.codebook_sizes == (32,) and fitted.num_channels == 1 and fitted.frame_rate == 25
  for n in (640, 641, 16000, 23456):
    u = fitted.encode(synthetic_speechlike(1.5, 16000)[:n], 16000)
    assert u.dtype == np.int32 and u.shape == (fitted.num_frames(n), 1)
    assert abs(u.shape[0] - n / 640) <= 1 and u.min() >= 0 and u.max() < 32
  tok50 = fit_kmeans_tokenizer(_corpus(), 16000, num_units=8, rate=50.0, num_iters=3)
  assert tok50.encode(np.zeros(16000, np.float32) + 0.01, 16000).shape == (50, 1)
  with pytest.raises(ValueError, match="whole hop"):
    fit_kmeans_tokenizer(_corpus(), 16000, num_units=8, rate=30.0)


def test_pool_and_stack():
  mel = np.arange(10, dtype=np.float32)[:, None] * np.ones([1, 2], np.float32)
  # mel hop 200, unit hop 640: frames 0-3 -> unit 0, 4-6 -> unit 1, 7-9 -> unit 2
  np.testing.assert_allclose(pool_frames(mel, 200, 640)[:, 0], [1.5, 5.0, 8.0])
  s = stack_context(np.array([[1.0], [2.0], [3.0]]), 1)
  np.testing.assert_array_equal(s, [[1, 1, 2], [1, 2, 3], [2, 3, 3]])


def test_kmeans_finds_separated_blobs():
  rng = np.random.default_rng(0)
  centres = np.array([[0, 0], [10, 0], [0, 10], [10, 10]], np.float32)
  labels = rng.integers(0, 4, 800)
  x = centres[labels] + 0.3 * rng.standard_normal([800, 2]).astype(np.float32)
  c = kmeans(x, 4, seed=0)
  assert np.abs(np.sort(c, axis=0) - np.sort(centres, axis=0)).max() < 0.2
  with pytest.raises(ValueError, match="at least num_units"):
    kmeans(x[:3], 4)


def test_kmeans_iterations_reduce_distortion():
  x = np.random.default_rng(0).standard_normal([2000, 4]).astype(np.float32)

  def distortion(c):
    return ((x[:, None, :] - c[None]) ** 2).sum(-1).min(1).mean()

  lines = []
  one, many = kmeans(x, 16, num_iters=1), kmeans(x, 16, num_iters=30, log_fn=lines.append)
  assert distortion(many) < 0.97 * distortion(one)
  assert len(lines) == 1 and "of at most 30 iterations" in lines[0]


def test_dedup():
  u, runs = dedup_units(np.array([[1], [1], [2], [2], [2], [1]]))
  assert u[:, 0].tolist() == [1, 2, 1] and runs.tolist() == [2, 3, 1]
  u, runs = dedup_units(np.zeros([0, 1], np.int32))
  assert u.shape == (0, 1) and runs.shape == (0,)


def test_encode_with_durations_and_dedup_tokenizer(fitted, tmp_path):
  x = synthetic_speechlike(2.0, 16000, seed=7)
  raw = fitted.encode(x, 16000)
  units, runs = fitted.encode_with_durations(x, 16000)
  assert runs.sum() == raw.shape[0] and (units[1:, 0] != units[:-1, 0]).all()
  np.testing.assert_array_equal(np.repeat(units[:, 0], runs), raw[:, 0])
  fitted.save(str(tmp_path))
  dd = KMeansTokenizer(fitted.centroids, rate=25.0, dedup=True)
  np.testing.assert_array_equal(dd.encode(x, 16000), units)
  assert "dedup" in dd.name and dd.name != fitted.name


def test_decode_length(fitted):
  x = synthetic_speechlike(1.0, 16000, seed=2)
  units, runs = fitted.encode_with_durations(x, 16000)
  y = fitted.decode(units, runs)
  assert y.dtype == np.float32 and y.shape == (runs.sum() * 640,)
  assert fitted.decode(fitted.encode(x, 16000)).shape == (25 * 640,)
  with pytest.raises(ValueError, match="out of range"):
    fitted.decode(np.array([[32]]))


def test_save_load(fitted, tmp_path):
  fitted.save(str(tmp_path))
  back = load_speech_tokenizer(str(tmp_path))
  assert isinstance(back, KMeansTokenizer) and back.name == fitted.name
  np.testing.assert_array_equal(back.centroids, fitted.centroids)
  assert get_speech_tokenizer("kmeans", str(tmp_path)).name == fitted.name
  with pytest.raises(ValueError, match="not 'precomputed'"):
    get_speech_tokenizer("precomputed", str(tmp_path))
  with pytest.raises(ValueError, match="needs a path"):
    get_speech_tokenizer("kmeans")
  np.savez(str(tmp_path / "centroids.npz"), centroids=fitted.centroids[:5])
  with pytest.raises(ValueError, match="5 centroids"):
    load_speech_tokenizer(str(tmp_path))


def test_context_stacking_tokenizer():
  tok = fit_kmeans_tokenizer(_corpus(), 16000, num_units=8, rate=25.0, context=1, num_iters=3)
  assert tok.centroids.shape == (8, 240)
  x = synthetic_speechlike(1.0, 16000, seed=4)
  assert tok.encode(x, 16000).shape == (25, 1)
  assert tok.decode(tok.encode(x, 16000)).shape == (25 * 640,)
