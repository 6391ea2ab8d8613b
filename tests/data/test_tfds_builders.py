"""tfds builders, prepared offline from a tiny demo corpus and a tiny fake LibriSpeech folder."""
import os

import numpy as np
import pytest
import soundfile as sf

from slm_jax.data.corpus import build, manifest, tfds_builders


@pytest.fixture(scope="module")
def tiny_corpus(tmp_path_factory):
  out = str(tmp_path_factory.mktemp("demo"))
  build.build_demo_corpus(out, max_sentences=3, voices_per_sentence=1, seed=1, workers=1,
                          voices=("flite:kal16",), split_fractions=(0.5, 0.25, 0.25),
                          progress=False)
  return out


def test_demo_corpus_builder(tiny_corpus, tmp_path):
  builder = tfds_builders.prepare("slm_demo_corpus", tiny_corpus, str(tmp_path / "tfds"))
  for split in manifest.SPLITS:
    records = {r["id"]: r for r in manifest.read_manifest(tiny_corpus, split)}
    if not records:
      assert split not in builder.info.splits
      continue
    assert builder.info.splits[split].num_examples == len(records)
    for ex in builder.as_dataset(split=split).as_numpy_iterator():
      r = records[ex["id"].decode()]
      assert ex["text"].decode() == r["text"] and ex["speaker"].decode() == r["speaker"]
      assert [w.decode() for w in ex["words"]] == r["words"]
      np.testing.assert_allclose(ex["word_starts"], r["word_starts"], atol=1e-6)
      np.testing.assert_allclose(ex["word_ends"], r["word_ends"], atol=1e-6)
      assert ex["audio"].dtype == np.int16
      np.testing.assert_array_equal(ex["audio"], manifest.load_audio(tiny_corpus, r))
  assert builder.info.features["audio"].sample_rate == 16000


def test_demo_corpus_builder_without_manifests_is_a_clear_error(tmp_path):
  with pytest.raises(FileNotFoundError, match="build-demo"):
    tfds_builders.prepare("slm_demo_corpus", str(tmp_path / "missing"), str(tmp_path / "tfds"))
  (tmp_path / "other").mkdir()
  (tmp_path / "other" / "notes.txt").write_text("not a corpus")
  with pytest.raises(FileNotFoundError, match="no manifest_<split>.jsonl"):
    tfds_builders.prepare("slm_demo_corpus", str(tmp_path / "other"), str(tmp_path / "tfds"))


def _fake_librispeech(root, speakers=(("19", "198"), ("26", "495")), rate=16000, ext=".flac"):
  rng = np.random.default_rng(0)
  expected = {}
  for spk, chap in speakers:
    d = os.path.join(root, spk, chap)
    os.makedirs(d)
    lines = []
    for u in range(2):
      utt = f"{spk}-{chap}-{u:04d}"
      audio = (rng.standard_normal(rate // 4 + 100 * u) * 3000).astype(np.int16)
      sf.write(os.path.join(d, utt + ext), audio, rate, subtype="PCM_16")
      lines.append(f"{utt} HELLO WORLD NUMBER {['ONE', 'TWO'][u]} FROM THE SPEAKER")
      expected[utt] = audio
    with open(os.path.join(d, f"{spk}-{chap}.trans.txt"), "w") as f:
      f.write("\n".join(lines) + "\n")
  return expected


def test_librispeech_folder_builder_single_split(tmp_path):
  expected = _fake_librispeech(str(tmp_path / "ls"))
  builder = tfds_builders.prepare("librispeech_folder", str(tmp_path / "ls"),
                                  str(tmp_path / "tfds"))
  assert list(builder.info.splits) == ["train"]
  seen = {}
  for ex in builder.as_dataset(split="train").as_numpy_iterator():
    seen[ex["id"].decode()] = ex
    assert ex["text"].decode() in ("hello world number one from the speaker",
                                   "hello world number two from the speaker")
    assert ex["speaker"].decode() == "librispeech-" + ex["id"].decode().split("-")[0]
    assert len(ex["word_starts"]) == len(ex["word_ends"]) == 0
    assert len(ex["words"]) == len(ex["text"].split())
  assert set(seen) == set(expected)
  for utt, audio in expected.items():
    np.testing.assert_array_equal(seen[utt]["audio"], audio)  # flac is lossless


def test_librispeech_folder_split_subfolders_and_resampling(tmp_path):
  root = tmp_path / "ls"
  _fake_librispeech(str(root / "dev-clean"), speakers=(("7", "1"),), ext=".wav")
  _fake_librispeech(str(root / "test-other"), speakers=(("8", "2"),), rate=8000)
  assert set(tfds_builders.librispeech_splits(str(root))) == {"dev_clean", "test_other"}
  builder = tfds_builders.prepare("librispeech_folder", str(root), str(tmp_path / "tfds"))
  ex = next(builder.as_dataset(split="test_other").as_numpy_iterator())
  assert abs(len(ex["audio"]) - 2 * 2000) <= 2 * 100 + 4  # 8 kHz -> 16 kHz
  with pytest.raises(FileNotFoundError, match="trans.txt"):
    tfds_builders.librispeech_splits(str(tmp_path))
