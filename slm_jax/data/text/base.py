"""What every slm_jax text vocabulary adds on top of seqio.Vocabulary.

- `name`: a stable identity string (e.g. "sentencepiece:<sha1 of the model bytes>"), stored as
  UnifiedVocab.text_vocab_name so data and checkpoints made with another tokenizer are refused.
- `size`: the number of text ids (UnifiedVocab.text_size).
- `encode_words(words) -> (ids int32[N], lens int32[W])` (docs/data_contract.md section 2): words
  are encoded one at a time so each word's ids can be aligned with its speech frames, and their
  concatenation equals the encoding of the sentence " ".join(words) on normal text.
- `encode_words_tf(words string[W]) -> (ids int32[N], lens int32[W])`, the same inside tf.data.
"""
from __future__ import annotations

import abc
from typing import Sequence

import numpy as np

from slm_jax.errors import SlmError


class TextVocabError(SlmError, ValueError):
  """A text vocabulary that cannot be built, loaded or trained as asked."""


class TextVocab(abc.ABC):
  """Mixin for seqio.Vocabulary subclasses; see the module docstring."""

  kind: str = ""            # its key in factory.KINDS
  needs_files: bool = True  # False: the kind is built without a model file (`cls()`)

  # Prefix added to every word after the first before encoding it on its own. Tokenizers that
  # mark word starts themselves (sentencepiece's "▁") use "", byte-level ones use " ".
  word_prefix: str = " "

  @property
  @abc.abstractmethod
  def name(self) -> str:
    """Stable identity string of this tokenizer (UnifiedVocab.text_vocab_name)."""

  @property
  def size(self) -> int:
    """Number of text ids (UnifiedVocab.text_size)."""
    return int(self.vocab_size)  # pytype: disable=attribute-error

  @abc.abstractmethod
  def encode_batch(self, texts: Sequence[str]) -> list[list[int]]:
    """Encodes each string independently (no BOS/EOS)."""

  @abc.abstractmethod
  def encode_batch_tf(self, texts):
    """tf string[W] -> tf.RaggedTensor int32[W, None], each string encoded independently."""

  def prefixed_words(self, words: Sequence[str]) -> list[str]:
    return [w if i == 0 else self.word_prefix + w for i, w in enumerate(words)]

  def encode_words(self, words: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """Encodes words one at a time -> (ids int32[N], lens int32[W]); sum(lens) == N."""
    words = [w.decode("utf-8") if isinstance(w, bytes) else str(w) for w in words]
    if not words:
      return np.zeros([0], np.int32), np.zeros([0], np.int32)
    pieces = self.encode_batch(self.prefixed_words(words))
    lens = np.array([len(p) for p in pieces], np.int32)
    ids = np.fromiter((i for p in pieces for i in p), np.int32, count=int(lens.sum()))
    return ids, lens

  def piece_spellings(self) -> list[str]:
    """The text each id adds when a sequence is decoded: one string per id, a word's first piece
    starting with " ", "" for ids that write nothing (pad, EOS, UNK). Character-level CTC
    targets are built from it (models/ctc_spelling.py)."""
    raise TextVocabError(f"the {self.kind or type(self).__name__!r} text vocabulary does not "
                         "spell its pieces; character-level CTC (ModelConfig.ctc_alphabet) needs "
                         "a sentencepiece or byte vocabulary")

  def encode_words_tf(self, words):
    """tf string[W] -> (ids int32[N], lens int32[W]) inside tf.data (graph mode safe)."""
    import tensorflow as tf  # pylint: disable=import-outside-toplevel
    words = tf.convert_to_tensor(words, tf.string)
    if self.word_prefix:
      first = tf.range(tf.size(words)) == 0
      words = tf.where(first, words, tf.strings.join([self.word_prefix, words]))
    ragged = self.encode_batch_tf(words)
    return (tf.cast(ragged.flat_values, tf.int32),
            tf.cast(ragged.row_lengths(), tf.int32))
