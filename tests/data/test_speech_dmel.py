"""dMel: shapes, value range, quantization error, batching, resampling, Griffin-Lim decoding."""
import importlib.util
import os

import numpy as np
import pytest

from slm_jax.data.speech import (DMelTokenizer, MelConfig, get_speech_tokenizer,
                                 load_speech_tokenizer, log_mel)
from slm_jax.data.synthetic import synthetic_speechlike


def _sine(seconds, rate=16000, freq=440.0, amp=0.3):
  t = np.arange(int(seconds * rate)) / rate
  return (amp * np.sin(2 * np.pi * freq * t)).astype(np.float32)


@pytest.fixture(scope="module")
def tok():
  return DMelTokenizer()


def test_spec(tok):
  assert tok.num_channels == 80 and tok.codebook_sizes == (16,) * 80
  assert tok.frame_rate == 80.0 and tok.sample_rate == 16000
  assert tok.name.startswith("dmel-80x16@80Hz-")
  np.testing.assert_allclose(tok.levels[[0, -1]], [-7.0, 2.0])


@pytest.mark.parametrize("num_samples", [1, 199, 200, 201, 16000, 16123])
def test_encode_shape_dtype_range(tok, num_samples):
  x = synthetic_speechlike(1.1, 16000)[:num_samples]
  f = tok.encode(x, 16000)
  assert f.dtype == np.int32 and f.shape == (tok.num_frames(num_samples), 80)
  assert f.shape[0] == -(-num_samples // 200)
  assert f.min() >= 0 and f.max() < 16


def test_quantization_error_bounded_by_half_step(tok):
  x = np.concatenate([synthetic_speechlike(1.0, 16000, seed=3), np.zeros(4000, np.float32)])
  m = log_mel(x, tok.mel)
  assert m.min() < -7 and m.max() > -2  # the test covers clipped and in-range values
  deq = tok.dequantize(tok.encode(x, 16000))
  inside = (m >= -7) & (m <= 2)
  assert np.abs(deq - m)[inside].max() <= tok.step / 2 + 1e-4
  np.testing.assert_array_equal(deq[m < -7], -7.0)  # below the range -> lowest level


def test_louder_is_higher_level(tok):
  quiet = tok.encode(_sine(0.5, amp=0.01), 16000)
  loud = tok.encode(_sine(0.5, amp=0.5), 16000)
  bin_440 = int(np.argmax(loud[20]))
  assert loud[20, bin_440] > quiet[20, bin_440]
  assert (loud >= quiet).mean() > 0.95


def test_batch_equals_single(tok):
  a, b = synthetic_speechlike(0.7, 16000, seed=1), _sine(0.3)
  batch = tok.encode_batch([a, b], 16000)
  np.testing.assert_array_equal(batch[0], tok.encode(a, 16000))
  np.testing.assert_array_equal(batch[1], tok.encode(b, 16000))


def test_int16_and_resampled_input(tok):
  x = _sine(1.0, rate=8000, freq=300)
  f8 = tok.encode(x, 8000)
  f16 = tok.encode(_sine(1.0, rate=16000, freq=300), 16000)
  assert f8.shape == f16.shape == (80, 80)
  assert np.abs(f8[5:-5].astype(int) - f16[5:-5]).mean() < 1.0  # same tone after resampling
  np.testing.assert_array_equal(tok.encode((x * 32767).astype(np.int16), 8000)[5:-5], f8[5:-5])


def test_decode_griffin_lim_length_and_fidelity(tok):
  x = synthetic_speechlike(0.5, 16000, seed=5)
  f = tok.encode(x, 16000)
  y = tok.decode(f)
  assert y.dtype == np.float32 and y.shape == (f.shape[0] * 200,)
  assert np.abs(y).max() <= 1.0
  f2 = tok.encode(y, 16000)
  # The resynthesis re-encodes to nearly the same levels; unrelated noise does not.
  err = np.abs(f2.astype(int) - f).mean()
  noise = tok.encode(0.05 * np.random.default_rng(0).standard_normal(8000).astype(np.float32),
                     16000)
  assert err < 0.6 and np.abs(noise.astype(int) - f).mean() > 3 * err


def test_decode_rejects_bad_frames(tok):
  with pytest.raises(ValueError, match="out of range"):
    tok.decode(np.full([4, 80], 16, np.int32))
  with pytest.raises(ValueError, match=r"shape \[T, 80\]"):
    tok.decode(np.zeros([4, 3], np.int32))


def test_save_load_and_identity(tok, tmp_path):
  tok.save(str(tmp_path))
  back = load_speech_tokenizer(str(tmp_path))
  assert isinstance(back, DMelTokenizer) and back.name == tok.name
  assert DMelTokenizer(num_levels=32).name != tok.name
  assert DMelTokenizer(mel=MelConfig(hop_length=160)).name.startswith("dmel-80x16@100Hz")
  assert DMelTokenizer(griffin_lim_iters=8).name == tok.name  # decoding options do not change codes
  assert get_speech_tokenizer("dmel").name == tok.name
  assert get_speech_tokenizer("dmel", str(tmp_path)).name == tok.name
  with pytest.raises(ValueError, match="unknown speech tokenizer kind"):
    get_speech_tokenizer("wavtokenizer")


def test_benchmark_realtime_factor_runs(tok, repo_root):
  path = os.path.join(repo_root, "bench", "data_pipeline.py")
  spec = importlib.util.spec_from_file_location("bench_data_pipeline", path)
  bench = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(bench)
  rtf = bench.benchmark_realtime_factor(tok, seconds=2.0, utterance_seconds=1.0, repeats=1)
  assert np.isfinite(rtf) and rtf > 0


def test_encode_inside_tf_data(tok):
  import tensorflow as tf
  a = (synthetic_speechlike(0.5, 16000, seed=8) * 32767).astype(np.int16)
  ds = tf.data.Dataset.from_tensors({"audio": a, "sample_rate": np.int32(16000)})
  ds = ds.map(lambda ex: tok.encode_tf(ex["audio"], ex["sample_rate"]))
  assert ds.element_spec.shape.as_list() == [None, 80]
  (frames,) = list(ds.as_numpy_iterator())
  np.testing.assert_array_equal(frames, tok.encode(a, 16000))


def test_stacked_frames_hold_consecutive_mel_frames_and_decode_alike(tok):
  audio = synthetic_speechlike(1.03, 16000, seed=5)
  stacked = DMelTokenizer(stack=4)
  assert stacked.codebook_sizes == (16,) * 320 and stacked.frame_rate == tok.frame_rate / 4
  assert stacked.name != tok.name and "x4@20Hz" in stacked.name
  flat, four = tok.encode(audio, 16000), stacked.encode(audio, 16000)
  assert four.shape == (stacked.num_frames(audio.size), 320) == (-(-flat.shape[0] // 4), 320)
  unstacked = four.reshape(-1, 80)
  np.testing.assert_array_equal(unstacked[:flat.shape[0]], flat)
  assert (unstacked[flat.shape[0]:] == 0).all()                 # padded with the silence level
  np.testing.assert_allclose(stacked.decode(four)[:flat.shape[0] * 200],
                             tok.decode(unstacked)[:flat.shape[0] * 200], atol=1e-5)
  with pytest.raises(ValueError, match="stack"):
    DMelTokenizer(stack=0)
