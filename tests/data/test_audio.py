"""Audio I/O: reading, mono mixdown, resampling, int16 conversion, clear errors, skip-and-count."""
import shutil
import subprocess

import numpy as np
import pytest
import soundfile as sf

from slm_jax.data import audio as audio_lib
from slm_jax.data.audio import AudioError, BadExamplePolicy, read_audio


def _sine(seconds, rate, freq=440.0, amp=0.5):
  t = np.arange(int(seconds * rate)) / rate
  return (amp * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def test_read_int16_wav_as_float(tmp_path):
  x = _sine(0.25, 16000)
  path = str(tmp_path / "a.wav")
  sf.write(path, audio_lib.to_int16(x), 16000, subtype="PCM_16")
  y, rate = read_audio(path)
  assert rate == 16000 and y.dtype == np.float32 and y.shape == x.shape
  np.testing.assert_allclose(y, x, atol=2 / 32768)


def test_stereo_is_mixed_to_mono(tmp_path):
  left, right = _sine(0.1, 16000, amp=0.2), _sine(0.1, 16000, freq=880, amp=0.4)
  path = str(tmp_path / "st.wav")
  sf.write(path, np.stack([left, right], axis=1), 16000, subtype="FLOAT")
  y, _ = read_audio(path)
  assert y.ndim == 1
  np.testing.assert_allclose(y, (left + right) / 2, atol=1e-6)
  y2, _ = read_audio(path, mono=False)
  assert y2.shape == (left.shape[0], 2)


def test_resample_8k_to_16k_length_and_pitch(tmp_path):
  x = _sine(1.0, 8000, freq=500)
  path = str(tmp_path / "8k.wav")
  sf.write(path, x, 8000)
  y, rate = read_audio(path, sample_rate=16000)
  assert rate == 16000 and y.shape[0] == 16000
  spectrum = np.abs(np.fft.rfft(y))
  assert abs(np.argmax(spectrum) * 16000 / y.shape[0] - 500) <= 2  # same tone, new rate
  assert audio_lib.resample(x, 8000, 8000) is not None
  assert audio_lib.resample(x, 8000, 24000).shape[0] == 24000


def test_int16_float_roundtrip():
  x = np.array([0.0, 0.5, -0.5, 1.5, -1.5], np.float32)
  i = audio_lib.to_int16(x)
  assert i.dtype == np.int16 and i[3] == 32767 and i[4] == -32768
  np.testing.assert_allclose(audio_lib.to_float32(i)[:3], x[:3], atol=1e-4)


def test_missing_file_error_names_it(tmp_path):
  path = str(tmp_path / "nope.wav")
  with pytest.raises(AudioError, match="nope.wav.*does not exist"):
    read_audio(path)


def test_empty_file_error(tmp_path):
  path = tmp_path / "empty.wav"
  path.write_bytes(b"")
  with pytest.raises(AudioError, match="empty.wav.*empty"):
    read_audio(str(path))


def test_corrupt_file_error(tmp_path):
  path = tmp_path / "bad.wav"
  path.write_bytes(b"RIFF\x24\x00\x00\x00WAVEgarbage-not-a-real-header" * 3)
  with pytest.raises(AudioError, match="bad.wav.*corrupt"):
    read_audio(str(path))


def test_zero_sample_wav_error(tmp_path):
  path = str(tmp_path / "zero.wav")
  sf.write(path, np.zeros([0], np.float32), 16000)
  with pytest.raises(AudioError, match="zero.wav.*0 samples"):
    read_audio(path)


def test_skip_policy_counts_and_raise_policy_raises(tmp_path):
  good = str(tmp_path / "good.wav")
  sf.write(good, _sine(0.1, 16000), 16000)
  bad = tmp_path / "bad.wav"
  bad.write_bytes(b"not audio")
  paths = [good, str(bad), str(tmp_path / "missing.wav"), good]
  policy = BadExamplePolicy("skip")
  out = [policy.call(read_audio, p, key=p) for p in paths]
  assert [o is None for o in out] == [False, True, True, False]
  rep = policy.report()
  assert rep["ok"] == 2 and rep["skipped"] == 2 and rep["reasons"] == {"AudioError": 2}
  assert "2 skipped" in policy.summary() and "bad.wav" in policy.summary()
  with pytest.raises(AudioError):
    BadExamplePolicy("raise").call(read_audio, str(bad))
  with pytest.raises(ValueError, match="'raise' or 'skip'"):
    BadExamplePolicy("ignore")


def test_skip_policy_refuses_mostly_broken_corpus(tmp_path):
  policy = BadExamplePolicy("skip", max_skip_fraction=0.5)
  with pytest.raises(AudioError, match="max_skip_fraction"):
    for i in range(30):
      policy.call(read_audio, str(tmp_path / f"missing{i}.wav"))


@pytest.mark.skipif(shutil.which("flite") is None, reason="needs Debian flite")
def test_reads_flite_speech(tmp_path):
  path = str(tmp_path / "hello.wav")
  subprocess.run(["flite", "-voice", "slt", "-t", "hello world", "-o", path], check=True)
  y, rate = read_audio(path, sample_rate=16000)
  assert rate == 16000 and y.shape[0] > 8000 and np.abs(y).max() > 0.05
