"""The speech tokenizer kinds, in one table, and how a kind and a path become a tokenizer.

    get_speech_tokenizer("dmel")                  # kinds that need no files build a default
    get_speech_tokenizer("kmeans", "DIR")         # the tokenizer saved in DIR (checked: a k-means)
    load_speech_tokenizer("DIR")                  # whichever kind DIR holds

gin: `get_speech_tokenizer.kind = "kmeans"`, `get_speech_tokenizer.path = "DIR"`. A new kind is a
SpeechTokenizer subclass added to KINDS; everything else reads the table.
"""
from __future__ import annotations

import functools
import json
import os
from typing import Optional

import gin

from slm_jax.data.speech.base import (SPEC_FILENAME, SpeechTokenizer, SpeechTokenizerError)
from slm_jax.data.speech.dmel import DMelTokenizer
from slm_jax.data.speech.kmeans import KMeansTokenizer
from slm_jax.data.speech.precomputed import PrecomputedUnits

KINDS: dict[str, type[SpeechTokenizer]] = {
    cls.kind: cls for cls in (DMelTokenizer, KMeansTokenizer, PrecomputedUnits)}
SPEECH_TOKENIZER_KINDS = tuple(KINDS)


def speech_tokenizer_class(kind: str) -> type[SpeechTokenizer]:
  if kind not in KINDS:
    raise SpeechTokenizerError(f"unknown speech tokenizer kind {kind!r}; choose one of "
                               f"{SPEECH_TOKENIZER_KINDS}")
  return KINDS[kind]


@gin.configurable
def get_speech_tokenizer(kind: str = "dmel", path: Optional[str] = None) -> SpeechTokenizer:
  """The speech tokenizer of `kind` saved in `path` ("kmeans": a `slm-data fit-kmeans` output;
  "precomputed": a folder with a speech_tokenizer.json); a kind that needs no files ("dmel")
  builds its default without a path, from the gin bindings in force (built each call, so a
  changed binding is seen). Loaded ones are cached per (kind, path)."""
  cls = speech_tokenizer_class(kind)
  if not path:
    if cls.needs_files:
      raise SpeechTokenizerError(
          f"speech tokenizer {kind!r} needs a path: the directory it was saved to "
          "(gin: get_speech_tokenizer.path = ...)")
    return cls()
  return _loaded(kind, path)


@functools.lru_cache(maxsize=16)
def _loaded(kind: str, path: str) -> SpeechTokenizer:
  tok = load_speech_tokenizer(path)
  if tok.kind != kind:
    raise SpeechTokenizerError(f"{path} holds a {tok.kind!r} speech tokenizer, not {kind!r}")
  return tok


def load_speech_tokenizer(directory: str) -> SpeechTokenizer:
  """Loads whichever tokenizer `save(directory)` wrote, and checks its identity."""
  path = directory if directory.endswith(".json") else os.path.join(directory, SPEC_FILENAME)
  if not os.path.exists(path):
    raise FileNotFoundError(f"no speech tokenizer spec at {path}; save one with tokenizer.save(dir)"
                            " (k-means: `slm-data fit-kmeans ... --out DIR`)")
  with open(path) as f:
    spec = json.load(f)
  kind = spec.get("kind")
  if kind not in KINDS:
    raise SpeechTokenizerError(f"{path}: unknown speech tokenizer kind {kind!r}; known: "
                               f"{SPEECH_TOKENIZER_KINDS}")
  tok = KINDS[kind].from_saved(spec["config"], os.path.dirname(path))
  if spec.get("name") and spec["name"] != tok.name:
    raise SpeechTokenizerError(
        f"{path}: saved tokenizer name {spec['name']!r} differs from the loaded one {tok.name!r}; "
        "the files beside the spec were changed")
  return tok
