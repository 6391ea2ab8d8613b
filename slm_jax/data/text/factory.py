"""The text vocabulary kinds, in one table, and how a kind and a path become a vocabulary.

    get_text_vocabulary("sentencepiece", "spm.model")
    get_text_vocabulary("hf_tokenizers", "MODEL_DIR")     # or a tokenizer.json
    get_text_vocabulary("bytes")                          # kinds that need no files

gin: `get_text_vocabulary.kind = "sentencepiece"`, `get_text_vocabulary.path = ...`. A new kind is
a TextVocab added to KINDS; everything else reads the table.
"""
from __future__ import annotations

import functools
from typing import Optional

import gin

from slm_jax.data.text.base import TextVocab, TextVocabError
from slm_jax.data.text.byte_vocab import ByteVocab
from slm_jax.data.text.hf_vocab import HFTokenizerVocab
from slm_jax.data.text.sentencepiece_vocab import SentencePieceVocab

KINDS: dict[str, type[TextVocab]] = {
    cls.kind: cls for cls in (SentencePieceVocab, ByteVocab, HFTokenizerVocab)}
TEXT_VOCAB_KINDS = tuple(KINDS)


def text_vocab_class(kind: str) -> type[TextVocab]:
  if kind not in KINDS:
    raise TextVocabError(f"unknown text vocabulary kind {kind!r}; choose one of {TEXT_VOCAB_KINDS}")
  return KINDS[kind]


@gin.configurable
def get_text_vocabulary(kind: str = "sentencepiece", path: Optional[str] = None,
                        **kwargs) -> TextVocab:
  """Returns the text vocabulary `kind` read from `path` (the .model file of sentencepiece, a
  tokenizer.json or model directory of hf_tokenizers); kinds that need no files ("bytes") take
  no path. Instances are cached per (kind, path, kwargs), so tasks share one loaded tokenizer.
  """
  return _cached(kind, path, tuple(sorted(kwargs.items())))


@functools.lru_cache(maxsize=32)
def _cached(kind, path, kwargs) -> TextVocab:
  cls = text_vocab_class(kind)
  if not cls.needs_files:
    return cls()
  if not path:
    raise TextVocabError(f"text vocabulary {kind!r} needs a path (gin: get_text_vocabulary.path = ...)")
  return cls(path, **dict(kwargs))
