"""tf.data sources of corpus utterances (docs/data_contract.md section 1) and plain text.

All sources are seqio FunctionDataSources whose folder is resolved when a dataset is requested
(not when the task is registered), so importing `slm_jax.tasks` needs no corpus on disk.

  manifest: DIR/manifest_<split>.jsonl + DIR/audio/<split>/<id>.wav (the `slm-data build-demo`
            layout); read directly, no preparation step.
  tfds:     the `slm_demo_corpus` tfds builder, prepared once into `tfds_data_dir` from DIR.
  text:     one sentence per line (DIR/texts.txt for train, texts_<split>.txt otherwise).
"""
from __future__ import annotations

import logging
import os
from typing import Callable, Optional, Sequence

import gin
import numpy as np
import seqio
import tensorflow as tf

UTTERANCE_SIGNATURE = {
    "id": tf.TensorSpec([], tf.string),
    "text": tf.TensorSpec([], tf.string),
    "words": tf.TensorSpec([None], tf.string),
    "word_starts": tf.TensorSpec([None], tf.float32),
    "word_ends": tf.TensorSpec([None], tf.float32),
    "audio": tf.TensorSpec([None], tf.int16),
    "sample_rate": tf.TensorSpec([], tf.int32),
    "speaker": tf.TensorSpec([], tf.string),
}


def _order(n: int, shuffle: bool, seed: Optional[int]) -> np.ndarray:
  return np.random.default_rng(seed).permutation(n) if shuffle else np.arange(n)


@gin.configurable(denylist=["corpus_dir", "split", "shuffle_files", "seed"])
def manifest_dataset(corpus_dir: str, split: str, shuffle_files: bool = False,
                     seed: Optional[int] = None, on_bad_example: str = "raise",
                     max_skip_fraction: Optional[float] = 0.1) -> tf.data.Dataset:
  """Utterances of one split of a corpus folder, audio int16 at the recorded rate.

  on_bad_example: "raise" (default) stops at the first missing / empty / corrupt / wrong-rate
    audio file with an AudioError naming it; "skip" drops such utterances, counts them and logs a
    summary at the end of each pass (and still fails when more than `max_skip_fraction` of them
    are bad). gin: `manifest_dataset.on_bad_example = "skip"`. An empty transcript is not an
    error here: untranscribed speech serves speech-LM templates, and templates that need text
    skip and count it (SkipExample "empty_transcript").
  """
  from slm_jax.data import audio as audio_lib  # pylint: disable=import-outside-toplevel
  from slm_jax.data.corpus import manifest  # pylint: disable=import-outside-toplevel
  records = manifest.read_manifest(corpus_dir, split)

  def gen():
    policy = audio_lib.BadExamplePolicy(on_bad_example, max_skip_fraction=max_skip_fraction)
    for i in _order(len(records), shuffle_files, seed):
      r = records[i]
      audio = policy.call(manifest.load_audio, corpus_dir, r, key=f"{split}/{r.get('id', i)}")
      if audio is None:
        continue
      yield {"id": r["id"], "text": r["text"], "words": np.asarray(r.get("words", []), object),
             "word_starts": np.asarray(r.get("word_starts", []), np.float32),
             "word_ends": np.asarray(r.get("word_ends", []), np.float32),
             "audio": audio,
             "sample_rate": np.int32(r.get("sample_rate", manifest.SAMPLE_RATE)),
             "speaker": r.get("speaker", "")}
    if policy.num_skipped:
      logging.warning("corpus %s split %s: %s", corpus_dir, split, policy.summary())

  return tf.data.Dataset.from_generator(gen, output_signature=UTTERANCE_SIGNATURE)


def tfds_dataset(corpus_dir: str, split: str, shuffle_files: bool = False,
                 seed: Optional[int] = None, data_dir: Optional[str] = None,
                 builder_name: str = "slm_demo_corpus") -> tf.data.Dataset:
  """Utterances from the tfds builder (prepared on first use into `data_dir`)."""
  from slm_jax.data.corpus import tfds_builders  # pylint: disable=import-outside-toplevel
  data_dir = data_dir or os.path.join(corpus_dir, "tfds")
  builder = tfds_builders.prepare(builder_name, corpus_dir, data_dir)
  read_config = None
  if shuffle_files and seed is not None:
    import tensorflow_datasets as tfds  # pylint: disable=import-outside-toplevel
    read_config = tfds.ReadConfig(shuffle_seed=seed)
  return builder.as_dataset(split=split, shuffle_files=shuffle_files, read_config=read_config)


def text_lines_dataset(corpus_dir: str, split: str, shuffle_files: bool = False,
                       seed: Optional[int] = None) -> tf.data.Dataset:
  """{"text": line} for each non-empty line of DIR/texts.txt (train) or DIR/texts_<split>.txt."""
  path = os.path.join(corpus_dir, "texts.txt" if split == "train" else f"texts_{split}.txt")
  if not os.path.exists(path):
    raise FileNotFoundError(f"no text file {path} for split {split!r}; build the corpus first "
                            f"(`slm-data build-demo --out {corpus_dir}`)")
  with open(path, encoding="utf-8") as f:
    lines = [line.strip() for line in f if line.strip()]
  lines = [lines[i] for i in _order(len(lines), shuffle_files, seed)]
  return tf.data.Dataset.from_tensor_slices({"text": tf.constant(lines, tf.string)})


def function_source(reader: Callable[..., tf.data.Dataset], corpus_dir_fn: Callable[[], str],
                    splits: Sequence[str], **reader_kwargs) -> seqio.FunctionDataSource:
  """A seqio source calling reader(corpus_dir_fn(), split, shuffle_files, seed) lazily."""

  def dataset_fn(split: str, shuffle_files: bool, seed: Optional[int] = None) -> tf.data.Dataset:
    return reader(corpus_dir_fn(), split, shuffle_files=shuffle_files, seed=seed, **reader_kwargs)

  return seqio.FunctionDataSource(dataset_fn, splits=list(splits))
