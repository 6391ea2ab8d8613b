"""Registers seqio Tasks (corpus x template) and Mixtures, idempotently and lazily.

Registration only records names and callables: the text vocabulary, speech tokenizer, unified
vocabulary and corpus folder are resolved when a dataset is requested, so gin can still choose
them after `import slm_jax.tasks`. Re-registering a name replaces it (re-imports and reloads
never crash).

A task `<prefix>_<template>` runs: source -> select_speakers (utterance tasks) ->
tokenize_utterance (contract 1 -> 2) -> apply_template (2 -> 3). Templates and apply_template are built inside `gin.config_scope(task
name)`, so one task can be tuned alone, e.g. `demo_interleaved_span/SpanInterleave.speech_fraction
= 0.3`, `demo_asr/apply_template.max_length = 512` or `demo_tts/select_speakers.speakers =
('kal16',)` (a single-voice TTS task over a multi-voice corpus).
"""
from __future__ import annotations

import functools
import re
from typing import Callable, Mapping, Optional, Sequence, Union

import gin
import numpy as np
import seqio

from slm_jax.configuration import ConfigError
from slm_jax.data.templates import TEMPLATES, Template
from slm_jax.data.templates.preprocessors import apply_template
from slm_jax.data.tokenize import tokenize_utterance
from slm_jax.unified_vocab import UnifiedVocab, VocabMismatchError
from slm_jax.tasks.features import output_features


@gin.configurable
def task_unified_vocab(text_vocab=None, speech_tokenizer=None) -> UnifiedVocab:
  """The gin-configured UnifiedVocab (the model's), checked against the tokenizers feeding it.

  Text ids must fit in text_size, the speech tokenizer must have K channels whose codebooks fit,
  and identity names set in the UnifiedVocab must match the tokenizers' names.
  """
  vocab = UnifiedVocab()
  if text_vocab is not None:
    if text_vocab.size > vocab.text_size:
      raise VocabMismatchError(
          f"text vocabulary {text_vocab.name} has {text_vocab.size} ids but UnifiedVocab.text_size "
          f"is {vocab.text_size}; set UnifiedVocab.text_size = {text_vocab.size} "
          "(configs/models/*.gin)")
    if vocab.text_vocab_name and vocab.text_vocab_name != text_vocab.name:
      raise VocabMismatchError(
          f"UnifiedVocab.text_vocab_name is {vocab.text_vocab_name!r} but the task's text "
          f"vocabulary is {text_vocab.name!r}")
  if speech_tokenizer is not None:
    sizes = tuple(speech_tokenizer.codebook_sizes)
    if len(sizes) != vocab.num_channels or any(
        a > b for a, b in zip(sizes, vocab.speech_codebook_sizes)):
      raise VocabMismatchError(
          f"speech tokenizer {speech_tokenizer.name} has codebooks {sizes} but "
          f"UnifiedVocab.speech_codebook_sizes is {vocab.speech_codebook_sizes}; set "
          f"UnifiedVocab.speech_codebook_sizes = {sizes}")
    if vocab.speech_tokenizer_name and vocab.speech_tokenizer_name != speech_tokenizer.name:
      raise VocabMismatchError(
          f"UnifiedVocab.speech_tokenizer_name is {vocab.speech_tokenizer_name!r} but the task's "
          f"speech tokenizer is {speech_tokenizer.name!r}")
  return vocab


def _encode_text_fn(text_vocab) -> Callable[[str], np.ndarray]:
  return lambda s: text_vocab.encode_words(s.split())[0]


@gin.configurable
def select_speakers(dataset, speakers: Optional[Sequence[str]] = None):
  """Only the utterances whose `speaker` contains one of `speakers` (None: all of them).

  Matching by substring, as `slm-eval`'s manifest filter does: 'kal16' selects 'flite-kal16'.
  """
  if speakers is None:
    return dataset
  if isinstance(speakers, str) or not speakers or not all(
      isinstance(s, str) and s for s in speakers):
    raise ConfigError(f"select_speakers.speakers must be a non-empty list of non-empty names, "
                      f"got {speakers!r}")
  import tensorflow as tf  # pylint: disable=import-outside-toplevel
  pattern = ".*(" + "|".join(re.escape(s) for s in speakers) + ").*"
  return dataset.filter(lambda ex: tf.strings.regex_full_match(ex["speaker"], pattern))


def _speaker_step(dataset, *, scope: str):
  with gin.config_scope(scope):
    return select_speakers(dataset)


def _tokenize_step(dataset, *, scope: str, text_vocab_fn, speech_tokenizer_fn):
  with gin.config_scope(scope):
    return tokenize_utterance(dataset, text_vocab=text_vocab_fn(),
                              speech_tokenizer=speech_tokenizer_fn() if speech_tokenizer_fn else None)


def _template_step(dataset, sequence_length=None, *, scope: str, template_cls, text_vocab_fn,
                   speech_tokenizer_fn):
  text_vocab = text_vocab_fn()
  tok = speech_tokenizer_fn() if speech_tokenizer_fn else None
  with gin.config_scope(scope):
    template: Template = template_cls()
    return apply_template(dataset, template=template,
                          vocab=task_unified_vocab(text_vocab=text_vocab, speech_tokenizer=tok),
                          encode_text=_encode_text_fn(text_vocab), sequence_length=sequence_length)


def add_task(name: str, source: seqio.DataSource, template: Union[str, type], text_vocab_fn,
             speech_tokenizer_fn=None) -> seqio.Task:
  """Registers (or replaces) task `name`: source -> tokenize -> template."""
  template_cls = TEMPLATES[template] if isinstance(template, str) else template
  needs_speech = template_cls.needs_speech or template_cls.needs_alignment
  tok_fn = speech_tokenizer_fn if needs_speech else None
  unified_fn = lambda: task_unified_vocab(text_vocab=text_vocab_fn(),  # noqa: E731
                                          speech_tokenizer=tok_fn() if tok_fn else None)
  if name in seqio.TaskRegistry.names():
    seqio.TaskRegistry.remove(name)
  return seqio.TaskRegistry.add(
      name, source=source, output_features=output_features(unified_fn),
      preprocessors=([functools.partial(_speaker_step, scope=name)] if needs_speech else []) + [
          functools.partial(_tokenize_step, scope=name, text_vocab_fn=text_vocab_fn,
                            speech_tokenizer_fn=tok_fn),
          functools.partial(_template_step, scope=name, template_cls=template_cls,
                            text_vocab_fn=text_vocab_fn, speech_tokenizer_fn=tok_fn),
      ],
      shuffle_buffer_size=1000)


def add_mixture(name: str, tasks: Union[Sequence[str], Mapping[str, object]],
                default_rate: Optional[float] = None) -> seqio.Mixture:
  """Registers (or replaces) a mixture; `tasks` maps task name -> rate (float or callable)."""
  if name in seqio.MixtureRegistry.names():
    seqio.MixtureRegistry.remove(name)
  items = list(tasks.items()) if isinstance(tasks, Mapping) else list(tasks)
  return seqio.MixtureRegistry.add(name, items, default_rate=default_rate)
