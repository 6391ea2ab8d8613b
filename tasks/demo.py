"""Tasks and mixtures on the demo corpus (`slm-data build-demo --out DIR`).

Tasks (`demo_<template>`):
  demo_text_lm            text LM on the unique train sentences (DIR/texts*.txt)
  demo_speech_lm          speech unit continuation on every utterance
  demo_asr, demo_tts      speech -> text, text -> speech
  demo_tts_words          text -> speech, word-interleaved: each word's text before its speech
                          (slm_jax/data/templates/word_tts.py; needs word timings)
  demo_interleaved_span   span interleaving (Zeng et al. 2024)
  demo_interleaved_word   word-aligned interleaving (Spirit LM)
  demo_instruct           SYNTHETIC instructions made from the utterances themselves
                          ("Write down what was said." / "Say this: ...")
Mixtures:
  demo_spiritlm_thirds    speech-only / interleaved (word-aligned) / text-only in thirds (Spirit LM)
  demo_all                every task; rates from `demo_all_rates` (gin)
  demo_main               the demo's recipe: ASR (whole transcripts paired with their speech)
                          x 2 + word-interleaved TTS + a little text LM; rates from
                          `demo_main_rates` (gin); `tts` > 0 adds whole-transcript TTS
                          (configs/tasks/demo_main_whole.gin)
A task whose rate is 0 is left out of demo_all / demo_main (not cached, not read).

Where things live (gin; configs/tasks/demo.gin):
  demo_corpus_dir.path          the corpus folder (default $SLM_DEMO_CORPUS or data/demo_corpus)
  demo_source.kind              "manifest" (read the jsonl + wavs) | "tfds" (slm_demo_corpus builder)
  demo_text_vocab.kind / .path  default sentencepiece DIR/tokenizers/spm<text_size>.model
  demo_speech_tokenizer.kind / .path   default k-means DIR/tokenizers/kmeans512
The ids are laid out by the gin-configured UnifiedVocab (configs/models/demo.gin: text 512,
speech dMel 80 x 16; configs/models/demo_14m.gin: text 4096, speech (512,)), checked against the
tokenizers when a dataset is built.
"""
from __future__ import annotations

import os
from typing import Optional

import gin
import seqio

from slm_jax.tasks import registration, sources

SPLITS = ("train", "validation", "test", "test_real")
TEXT_SPLITS = ("train", "validation", "test")
TEMPLATE_NAMES = ("speech_lm", "asr", "tts", "interleaved_span", "interleaved_word", "instruct",
                  "tts_words")


@gin.configurable
def demo_corpus_dir(path: Optional[str] = None) -> str:
  """The demo corpus folder: `path`, else $SLM_DEMO_CORPUS, else data/demo_corpus."""
  path = path or os.environ.get("SLM_DEMO_CORPUS") or "data/demo_corpus"
  if not os.path.isdir(path):
    raise FileNotFoundError(f"demo corpus folder {path!r} does not exist: build it with `slm-data "
                            f"build-demo --out {path}`, or point gin `demo_corpus_dir.path` (or "
                            "$SLM_DEMO_CORPUS) at an existing one")
  return path


@gin.configurable
def demo_source(corpus_dir: str, split: str, shuffle_files: bool = False,
                seed: Optional[int] = None, kind: str = "manifest",
                tfds_data_dir: Optional[str] = None):
  """Utterances of one split: kind "manifest" (direct) or "tfds" (prepared builder)."""
  if kind == "manifest":
    return sources.manifest_dataset(corpus_dir, split, shuffle_files, seed)
  if kind == "tfds":
    return sources.tfds_dataset(corpus_dir, split, shuffle_files, seed, data_dir=tfds_data_dir)
  raise ValueError(f"demo_source.kind must be 'manifest' or 'tfds', got {kind!r}")


def _require(path: str, how: str) -> str:
  if not os.path.exists(path):
    raise FileNotFoundError(f"{path} does not exist; {how}")
  return path


@gin.configurable
def demo_text_vocab(kind: str = "sentencepiece", path: Optional[str] = None):
  """The text vocabulary (slm_jax.data.text). A kind that reads a model file defaults to the
  demo's sentencepiece model DIR/tokenizers/spm<N>.model, N = the gin UnifiedVocab's text_size
  (512 for configs/models/demo.gin, 4096 for configs/models/demo_14m.gin)."""
  from slm_jax.data.text import get_text_vocabulary, text_vocab_class  # pylint: disable=import-outside-toplevel
  from slm_jax.unified_vocab import UnifiedVocab  # pylint: disable=import-outside-toplevel
  if path is None and text_vocab_class(kind).needs_files:
    d, n = demo_corpus_dir(), UnifiedVocab().text_size
    path = _require(os.path.join(d, "tokenizers", f"spm{n}.model"),
                    f"train it with `slm-data train-spm --input {d}/texts.txt --vocab_size {n} "
                    f"--out {d}/tokenizers/spm{n}` or set gin demo_text_vocab.path")
  return get_text_vocabulary(kind=kind, path=path)


@gin.configurable
def demo_speech_tokenizer(kind: str = "kmeans", path: Optional[str] = None):
  """The speech tokenizer (slm_jax.data.speech). A kind that loads saved files defaults to the
  demo's k-means units DIR/tokenizers/kmeans512 (its kind is checked against `kind`)."""
  from slm_jax.data.speech import get_speech_tokenizer, speech_tokenizer_class  # pylint: disable=import-outside-toplevel
  if path is None and speech_tokenizer_class(kind).needs_files:
    d = demo_corpus_dir()
    path = _require(os.path.join(d, "tokenizers", "kmeans512"),
                    f"fit it with `slm-data fit-kmeans --audio_glob '{d}/audio/train/*.wav' "
                    f"--num_units 512 --rate 25 --out {d}/tokenizers/kmeans512` or set gin "
                    "demo_speech_tokenizer.path")
  return get_speech_tokenizer(kind=kind, path=path)


@gin.configurable
def demo_all_rates(text_lm: float = 1.0, speech_lm: float = 1.0, asr: float = 1.0,
                   tts: float = 1.0, interleaved_span: float = 1.0, interleaved_word: float = 1.0,
                   instruct: float = 0.5, tts_words: float = 0.0) -> dict[str, float]:
  """Mixing rates of demo_all, by template name (relative weights; 0 leaves a task out)."""
  return dict(text_lm=text_lm, speech_lm=speech_lm, asr=asr, tts=tts,
              interleaved_span=interleaved_span, interleaved_word=interleaved_word,
              instruct=instruct, tts_words=tts_words)


@gin.configurable
def demo_main_rates(asr: float = 2.0, tts: float = 0.0, text_lm: float = 0.25,
                    tts_words: float = 1.0) -> dict[str, float]:
  """Mixing rates of demo_main (relative weights): ASR on whole transcripts paired with their
  speech, word-interleaved TTS (`tts_words`, demo_tts_words), some text LM, and whole-transcript
  TTS (`tts`; 0, the default, leaves it out of the mixture)."""
  return dict(asr=asr, tts=tts, text_lm=text_lm, tts_words=tts_words)


def _rate(template: str, table=demo_all_rates):
  return lambda task: table()[template]


class PositiveRateMixture(seqio.Mixture):
  """A Mixture whose tasks are those with a rate > 0, read when the tasks are asked for (rates
  are gin-bound after registration): a 0-rate task is neither cached nor read."""

  @property
  def tasks(self):
    return [t for t in super().tasks if self.get_rate(t) > 0]


def _add_positive_rate_mixture(name: str, rates: dict) -> None:
  if name in seqio.MixtureRegistry.names():
    seqio.MixtureRegistry.remove(name)
  seqio.MixtureRegistry.add(name, list(rates.items()), mixture_cls=PositiveRateMixture)


def register(prefix: str = "demo") -> list[str]:
  """Registers the demo tasks and mixtures (idempotent); returns the task names."""
  utterances = sources.function_source(demo_source, demo_corpus_dir, SPLITS)
  texts = sources.function_source(sources.text_lines_dataset, demo_corpus_dir, TEXT_SPLITS)
  names = [registration.add_task(f"{prefix}_text_lm", texts, "text_lm", demo_text_vocab).name]
  for t in TEMPLATE_NAMES:
    names.append(registration.add_task(f"{prefix}_{t}", utterances, t, demo_text_vocab,
                                       demo_speech_tokenizer).name)
  registration.add_mixture(f"{prefix}_spiritlm_thirds", {
      f"{prefix}_speech_lm": 1.0, f"{prefix}_interleaved_word": 1.0, f"{prefix}_text_lm": 1.0})
  _add_positive_rate_mixture(f"{prefix}_all", {n: _rate(n[len(prefix) + 1:]) for n in names})
  _add_positive_rate_mixture(f"{prefix}_main", {f"{prefix}_{t}": _rate(t, demo_main_rates)
                                                for t in ("asr", "tts", "text_lm", "tts_words")})
  return names


TASKS = register()
