"""The manifest corpus source: bad audio is named, or skipped and counted."""
import logging
import os

import numpy as np
import pytest

from slm_jax.data import audio as audio_lib
from slm_jax.data.corpus import manifest
from slm_jax.tasks import sources


def _corpus(root, bad: dict) -> str:
  """6 utterances of a short tone; `bad` maps index -> "corrupt" | "empty_file" | "no_text" |
  "missing" | "rate"."""
  records = []
  os.makedirs(os.path.join(root, "audio", "train"), exist_ok=True)
  for i in range(6):
    rel = f"audio/train/u{i}.wav"
    path = os.path.join(root, rel)
    tone = (3000 * np.sin(np.arange(1600 + 160 * i) * 0.05)).astype(np.int16)
    kind = bad.get(i)
    if kind == "corrupt":
      with open(path, "wb") as f:
        f.write(b"RIFF\x00\x00\x00\x00WAVEnot really a wav file")
    elif kind == "empty_file":
      open(path, "wb").close()
    elif kind == "rate":
      manifest.write_wav(path, tone, 8000)
    elif kind != "missing":
      manifest.write_wav(path, tone)
    records.append({"id": f"u{i}", "audio_path": rel, "sample_rate": 16000,
                    "text": "" if kind == "no_text" else f"utterance number {i}",
                    "words": [], "word_starts": [], "word_ends": [], "speaker": "tone",
                    "split": "train", "duration": len(tone) / 16000})
  manifest.write_manifest(root, "train", records)
  return root


def _ids(ds):
  return [ex["id"].decode() for ex in ds.as_numpy_iterator()]


def test_good_corpus_reads_every_utterance_exactly(tmp_path):
  root = _corpus(str(tmp_path), {})
  exs = list(sources.manifest_dataset(root, "train").as_numpy_iterator())
  assert [e["id"].decode() for e in exs] == [f"u{i}" for i in range(6)]
  assert exs[2]["audio"].dtype == np.int16 and len(exs[2]["audio"]) == 1600 + 320
  np.testing.assert_array_equal(exs[2]["audio"],
                                (3000 * np.sin(np.arange(1920) * 0.05)).astype(np.int16))


@pytest.mark.parametrize("kind,message", [
    ("corrupt", r"u3.wav.*corrupt"), ("empty_file", r"u3.wav.*empty"),
    ("missing", r"u3.wav.*does not exist"), ("rate", r"u3.wav.*expected mono 16000 Hz")])
def test_bad_example_stops_the_pass_with_its_name_by_default(tmp_path, kind, message):
  root = _corpus(str(tmp_path), {3: kind})
  with pytest.raises(Exception, match=message):
    _ids(sources.manifest_dataset(root, "train"))


def test_skip_policy_drops_and_counts_bad_examples(tmp_path, caplog):
  root = _corpus(str(tmp_path), {1: "corrupt", 4: "missing", 5: "no_text"})
  with caplog.at_level(logging.WARNING):
    ids = _ids(sources.manifest_dataset(root, "train", on_bad_example="skip",
                                        max_skip_fraction=None))
  # An untranscribed utterance is kept: speech-LM templates use it, text templates skip it.
  assert ids == ["u0", "u2", "u3", "u5"]
  assert "4 ok, 2 skipped" in caplog.text and "AudioError" in caplog.text
  assert "u1.wav" in caplog.text and "u4.wav" in caplog.text


def test_load_audio_raises_audio_error(tmp_path):
  root = _corpus(str(tmp_path), {0: "corrupt"})
  with pytest.raises(audio_lib.AudioError, match="u0.wav"):
    manifest.load_audio(root, manifest.read_manifest(root, "train")[0])
