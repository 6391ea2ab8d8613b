"""tfds DatasetBuilders built offline from local folders (no downloads).

- `SlmDemoCorpus` ("slm_demo_corpus"): a folder made by `slm-data build-demo`;
  splits train / validation / test / test_real.
- `LibrispeechFolder` ("librispeech_folder"): audio + transcripts in LibriSpeech layout,
  `<root>/<speaker>/<chapter>/<speaker>-<chapter>-<utt>.flac|wav` beside
  `<speaker>-<chapter>.trans.txt` ("<utt id> TRANSCRIPT" lines). If `<root>` holds such a tree
  directly it becomes split "train"; otherwise each sub-folder of `<root>` (e.g. "dev-clean")
  is a split (named with "-" -> "_"). Word timings are empty lists.

The local folder is tfds' manual_dir; `prepare()` is the one-liner:

  builder = prepare("slm_demo_corpus", corpus_dir="/tmp/demo_corpus", data_dir="/tmp/tfds")
  ds = builder.as_dataset(split="train")

Use one data_dir per source folder: tfds keys prepared data by builder name and version only.
"""
import os
import re

import numpy as np
import tensorflow_datasets as tfds

from slm_jax.data import audio as audio_lib
from slm_jax.data.corpus import manifest
from slm_jax.data.transcript import normalize_transcript

_AUDIO_EXTS = (".flac", ".wav")


def _features(sample_rate: int) -> tfds.features.FeaturesDict:
  return tfds.features.FeaturesDict({
      "id": tfds.features.Text(),
      "text": tfds.features.Text(),
      "words": tfds.features.Sequence(tfds.features.Text()),
      "word_starts": tfds.features.Sequence(np.float32),
      "word_ends": tfds.features.Sequence(np.float32),
      "audio": tfds.features.Audio(dtype=np.int16, sample_rate=sample_rate),
      "speaker": tfds.features.Text(),
  })


class SlmDemoCorpus(tfds.core.GeneratorBasedBuilder):
  """The slm_jax demo corpus (fortunes sentences in flite/espeak-ng voices, real test speech)."""

  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {"1.0.0": "First version."}
  MANUAL_DOWNLOAD_INSTRUCTIONS = (
      "Build the corpus offline with `slm-data build-demo --out DIR` and pass DIR as manual_dir "
      "(tfds.download.DownloadConfig(manual_dir=DIR)).")

  def _info(self) -> tfds.core.DatasetInfo:
    return self.dataset_info_from_configs(
        description=__doc__, features=_features(manifest.SAMPLE_RATE), supervised_keys=None)

  def _split_generators(self, dl_manager):
    root = dl_manager.manual_dir
    splits = {s: self._generate_examples(root, s) for s in manifest.SPLITS
              if os.path.exists(manifest.manifest_path(root, s)) and
              os.path.getsize(manifest.manifest_path(root, s)) > 0}
    if not splits:
      raise FileNotFoundError(f"no manifest_<split>.jsonl in {root}: build the corpus with "
                              f"`slm-data build-demo --out {root}`")
    return splits

  def _generate_examples(self, root, split):
    for record in manifest.read_manifest(os.fspath(root), split):
      yield record["id"], {
          "id": record["id"], "text": record["text"], "words": record["words"],
          "word_starts": np.asarray(record["word_starts"], np.float32),
          "word_ends": np.asarray(record["word_ends"], np.float32),
          "audio": manifest.load_audio(os.fspath(root), record), "speaker": record["speaker"]}


def _chapter_dirs(root: str):
  """Yields (speaker, chapter dir, transcript file) for each chapter under root."""
  for speaker in sorted(os.listdir(root)):
    sdir = os.path.join(root, speaker)
    if not os.path.isdir(sdir):
      continue
    for chapter in sorted(os.listdir(sdir)):
      trans = os.path.join(sdir, chapter, f"{speaker}-{chapter}.trans.txt")
      if os.path.exists(trans):
        yield speaker, os.path.join(sdir, chapter), trans


def librispeech_splits(root: str) -> dict[str, str]:
  """{split name: folder} for a LibriSpeech-layout root (see module docstring)."""
  if not os.path.isdir(root):
    raise FileNotFoundError(f"LibriSpeech folder {root} does not exist")
  if any(True for _ in _chapter_dirs(root)):
    return {"train": root}
  splits = {re.sub(r"[^A-Za-z0-9_]", "_", name): os.path.join(root, name)
            for name in sorted(os.listdir(root))
            if os.path.isdir(os.path.join(root, name)) and
            any(True for _ in _chapter_dirs(os.path.join(root, name)))}
  if not splits:
    raise FileNotFoundError(
        f"no <speaker>/<chapter>/<speaker>-<chapter>.trans.txt under {root} (or one level down)")
  return splits


class LibrispeechFolder(tfds.core.GeneratorBasedBuilder):
  """Audio + transcripts in LibriSpeech layout from a local folder; no word timings."""

  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {"1.0.0": "First version."}
  MANUAL_DOWNLOAD_INSTRUCTIONS = (
      "Pass the folder holding <speaker>/<chapter>/ (or split sub-folders of those) as "
      "manual_dir.")

  def _info(self) -> tfds.core.DatasetInfo:
    return self.dataset_info_from_configs(
        description=__doc__, features=_features(manifest.SAMPLE_RATE), supervised_keys=None)

  def _split_generators(self, dl_manager):
    return {name: self._generate_examples(folder)
            for name, folder in librispeech_splits(os.fspath(dl_manager.manual_dir)).items()}

  def _generate_examples(self, folder):
    for speaker, chapter_dir, trans in _chapter_dirs(folder):
      with open(trans, encoding="utf-8") as f:
        lines = [line.split(None, 1) for line in f if line.strip()]
      for parts in lines:
        utt_id, raw = parts[0], (parts[1] if len(parts) > 1 else "")
        text = normalize_transcript(raw)
        if not text:
          raise ValueError(f"{trans}: empty transcript for {utt_id}")
        path = next((os.path.join(chapter_dir, utt_id + e) for e in _AUDIO_EXTS
                     if os.path.exists(os.path.join(chapter_dir, utt_id + e))), None)
        if path is None:
          raise FileNotFoundError(f"{trans} names {utt_id} but there is no {utt_id}.flac/.wav "
                                  f"in {chapter_dir}")
        audio, _ = audio_lib.read_audio(path, sample_rate=manifest.SAMPLE_RATE)
        yield utt_id, {
            "id": utt_id, "text": text, "words": text.split(),
            "word_starts": np.zeros([0], np.float32), "word_ends": np.zeros([0], np.float32),
            "audio": audio_lib.to_int16(audio), "speaker": f"librispeech-{speaker}"}


def prepare(name: str, corpus_dir: str, data_dir: str) -> tfds.core.DatasetBuilder:
  """Builds (once) and returns the tfds builder `name` from the local folder `corpus_dir`."""
  if not os.path.isdir(corpus_dir):
    hint = (f"build it with `slm-data build-demo --out {corpus_dir}`" if name == "slm_demo_corpus"
            else "point it at an existing folder")
    raise FileNotFoundError(f"local source folder {corpus_dir} for tfds {name} does not exist; "
                            f"{hint}")
  builder = tfds.builder(name, data_dir=data_dir)
  builder.download_and_prepare(
      download_config=tfds.download.DownloadConfig(manual_dir=corpus_dir))
  return builder
