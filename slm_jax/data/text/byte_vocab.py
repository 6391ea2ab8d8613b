"""Byte-level vocabulary: the UTF-8 bytes of the text, ids 0..255, no specials of its own.

The unified vocabulary (UnifiedVocab) supplies pad/eos/bos and markers, so the text range is the
256 bytes exactly (UnifiedVocab.text_size = 256). Unlike seqio.ByteVocabulary there is no +3 offset.
"""
from __future__ import annotations

from typing import Optional, Sequence

import gin
import seqio
import tensorflow as tf

from slm_jax.data.text.base import TextVocab


@gin.configurable
class ByteVocab(TextVocab, seqio.Vocabulary):
  """UTF-8 bytes as ids 0..255 (seqio-usable; no EOS/UNK of its own)."""

  kind = "bytes"
  needs_files = False
  word_prefix = " "

  def __init__(self):
    super().__init__(extra_ids=0)

  @property
  def name(self) -> str:
    return "bytes:utf-8"

  @property
  def eos_id(self) -> Optional[int]:
    return None

  @property
  def unk_id(self) -> Optional[int]:
    return None

  @property
  def _base_vocab_size(self) -> int:
    return 256

  def _encode(self, s: str) -> Sequence[int]:
    return list(s.encode("utf-8"))

  def _decode(self, ids) -> str:
    return bytes(int(i) for i in ids if 0 <= int(i) < 256).decode("utf-8", errors="replace")

  def encode_batch(self, texts: Sequence[str]) -> list[list[int]]:
    return [list(t.encode("utf-8")) for t in texts]

  def _encode_tf(self, s):
    s = tf.convert_to_tensor(s, tf.string)
    if s.shape.rank == 0:
      return tf.cast(tf.io.decode_raw(s, tf.uint8), tf.int32)
    return self.encode_batch_tf(s)

  def encode_batch_tf(self, texts):
    chars = tf.strings.bytes_split(tf.convert_to_tensor(texts, tf.string))  # ragged [W, None]
    flat = tf.reshape(tf.io.decode_raw(chars.flat_values, tf.uint8), [-1])
    return chars.with_flat_values(tf.cast(flat, tf.int32))

  def _decode_tf(self, ids):
    table = tf.constant([bytes([b]) for b in range(256)])
    ids = tf.clip_by_value(tf.cast(ids, tf.int32), 0, 255)
    return tf.strings.reduce_join(tf.gather(table, ids), axis=-1)

  def piece_spellings(self) -> list[str]:
    return [chr(b) if b < 128 else "" for b in range(256)]   # multi-byte characters: not spelled

  def __eq__(self, other):
    return isinstance(other, ByteVocab)

  def __hash__(self):
    return hash(self.name)

  def __str__(self) -> str:
    return "ByteVocab(utf-8, 256 ids)"
