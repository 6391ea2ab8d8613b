"""Picks a speech tokenizer by kind (gin: `get_speech_tokenizer.kind = "kmeans"`)."""
from __future__ import annotations

import functools
from typing import Optional

import gin

from slm_jax.data.speech.base import SpeechTokenizer, load_speech_tokenizer
from slm_jax.data.speech.dmel import DMelTokenizer

SPEECH_TOKENIZER_KINDS = ("dmel", "kmeans", "precomputed")


@gin.configurable
def get_speech_tokenizer(kind: str = "dmel", path: Optional[str] = None) -> SpeechTokenizer:
  """Returns a speech tokenizer: "dmel" (training-free; `path` optional) or one saved in `path`
  ("kmeans": a `slm-data fit-kmeans` output; "precomputed": a dir with a speech_tokenizer.json).
  Cached per (kind, path)."""
  return _cached(kind, path)


@functools.lru_cache(maxsize=16)
def _cached(kind: str, path: Optional[str]) -> SpeechTokenizer:
  if kind not in SPEECH_TOKENIZER_KINDS:
    raise ValueError(f"unknown speech tokenizer kind {kind!r}; choose one of "
                     f"{SPEECH_TOKENIZER_KINDS}")
  if kind == "dmel" and not path:
    return DMelTokenizer()
  if not path:
    raise ValueError(f"speech tokenizer {kind!r} needs a path: the directory it was saved to "
                     "(gin: get_speech_tokenizer.path = ...)")
  tok = load_speech_tokenizer(path)
  if tok.kind != kind:
    raise ValueError(f"{path} holds a {tok.kind!r} speech tokenizer, not {kind!r}")
  return tok
