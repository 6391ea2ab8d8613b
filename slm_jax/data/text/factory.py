"""Picks a text vocabulary by name (gin: `get_text_vocabulary.kind = "sentencepiece"`)."""
from __future__ import annotations

import functools
from typing import Optional

import gin

from slm_jax.data.text.base import TextVocab

TEXT_VOCAB_KINDS = ("sentencepiece", "bytes", "hf_tokenizers")


@gin.configurable
def get_text_vocabulary(kind: str = "sentencepiece", path: Optional[str] = None,
                        **kwargs) -> TextVocab:
  """Returns the text vocabulary `kind` ("sentencepiece" | "bytes" | "hf_tokenizers").

  `path` is the .model file (sentencepiece) or tokenizer.json / model directory (hf_tokenizers).
  Instances are cached per (kind, path), so tasks share one loaded tokenizer.
  """
  return _cached(kind, path, tuple(sorted(kwargs.items())))


@functools.lru_cache(maxsize=32)
def _cached(kind, path, kwargs) -> TextVocab:
  kwargs = dict(kwargs)
  if kind == "bytes":
    from slm_jax.data.text.byte_vocab import ByteVocab  # pylint: disable=import-outside-toplevel
    return ByteVocab()
  if kind not in TEXT_VOCAB_KINDS:
    raise ValueError(f"unknown text vocabulary kind {kind!r}; choose one of {TEXT_VOCAB_KINDS}")
  if not path:
    raise ValueError(f"text vocabulary {kind!r} needs a path (gin: get_text_vocabulary.path = ...)")
  if kind == "sentencepiece":
    from slm_jax.data.text.sentencepiece_vocab import SentencePieceVocab  # pylint: disable=import-outside-toplevel
    return SentencePieceVocab(path, **kwargs)
  from slm_jax.data.text.hf_vocab import HFTokenizerVocab  # pylint: disable=import-outside-toplevel
  return HFTokenizerVocab(path, **kwargs)
