"""Precomputed units: spec validation on read (.npy and ArrayRecord), clear errors, save/load."""
import numpy as np
import pytest

from slm_jax.data.speech import (PrecomputedUnits, get_speech_tokenizer, load_speech_tokenizer,
                                 validate_frames, write_array_record)


@pytest.fixture
def mimi():
  return PrecomputedUnits("mimi-8", codebook_sizes=[2048] * 8, frame_rate=12.5, sample_rate=24000)


@pytest.fixture
def hubert(tmp_path):
  return PrecomputedUnits("hubert-km500", codebook_sizes=[500], frame_rate=50.0,
                          root=str(tmp_path))


def test_spec(mimi, hubert):
  assert mimi.num_channels == 8 and mimi.frame_rate == 12.5 and not mimi.can_decode
  assert mimi.name == "precomputed:mimi-8:" + "x".join(["2048"] * 8) + "@12.5Hz"
  assert hubert.name == "precomputed:hubert-km500:500@50Hz"
  with pytest.raises(NotImplementedError, match="read"):
    hubert.encode(np.zeros(16000, np.float32), 16000)


def test_read_valid_npy(hubert, mimi, tmp_path):
  np.save(tmp_path / "utt1.npy", np.array([0, 5, 499], np.int64))  # [T] is fine when K == 1
  u = hubert.lookup("utt1")
  assert u.dtype == np.int32 and u.shape == (3, 1) and u[:, 0].tolist() == [0, 5, 499]
  codes = np.random.default_rng(0).integers(0, 2048, [7, 8]).astype(np.int16)
  np.save(tmp_path / "m.npy", codes)
  np.testing.assert_array_equal(mimi.read(str(tmp_path / "m.npy")), codes)


@pytest.mark.parametrize("array, match", [
    (np.array([[0], [500]]), r"code 500 at frame 1, channel 0 is out of range \[0, 500\)"),
    (np.array([[-1], [2]]), "code -1 at frame 0"),
    (np.zeros([4, 2], np.int32), r"expected shape \[T, 1\]"),
    (np.zeros([2, 2, 1], np.int32), r"expected shape \[T, 1\]"),
    (np.zeros([4, 1], np.float32), "expected integer codes"),
])
def test_invalid_npy_names_file_and_value(hubert, tmp_path, array, match):
  path = tmp_path / "bad_utt.npy"
  np.save(path, array)
  with pytest.raises(ValueError, match=match) as e:
    hubert.read(str(path))
  assert "bad_utt.npy" in str(e.value) and "hubert-km500" in str(e.value)


def test_per_channel_codebook_sizes():
  validate_frames(np.array([[3, 9]]), [4, 10])
  with pytest.raises(ValueError, match="code 4 at frame 0, channel 0"):
    validate_frames(np.array([[4, 9]]), [4, 10])


def test_missing_and_corrupt_files(hubert, tmp_path):
  with pytest.raises(FileNotFoundError, match="nope.npy"):
    hubert.lookup("nope")
  (tmp_path / "junk.npy").write_bytes(b"not an npy file")
  with pytest.raises(ValueError, match="junk.npy.*not a readable .npy"):
    hubert.read(str(tmp_path / "junk.npy"))
  with pytest.raises(ValueError, match="needs `root`"):
    PrecomputedUnits("x", [10], 50.0).lookup("a")


def test_array_record_roundtrip_and_bad_record(mimi, tmp_path):
  rng = np.random.default_rng(1)
  arrays = [rng.integers(0, 2048, [t, 8]) for t in (3, 1, 9)]
  path = write_array_record(str(tmp_path / "units.array_record"), arrays)
  back = list(mimi.read_array_record(path))
  assert len(back) == 3 and all(np.array_equal(a, b) for a, b in zip(arrays, back))
  bad = write_array_record(str(tmp_path / "bad.array_record"), [arrays[0], np.full([2, 8], 4096)])
  with pytest.raises(ValueError, match=r"bad.array_record\[1\].*code 4096"):
    list(mimi.read_array_record(bad))


def test_save_load(hubert, tmp_path):
  d = str(tmp_path / "tok")
  hubert.save(d)
  back = load_speech_tokenizer(d)
  assert isinstance(back, PrecomputedUnits) and back.name == hubert.name and back.root == hubert.root
  assert get_speech_tokenizer("precomputed", d).codebook_sizes == (500,)
  with pytest.raises(ValueError, match="codebook_sizes"):
    PrecomputedUnits("x", [], 50.0)
