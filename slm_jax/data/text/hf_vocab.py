"""Hugging Face `tokenizers` JSON (tokenizer.json) as a seqio vocabulary.

Lets a model warm-started from a Llama / Qwen checkpoint keep its tokenizer. The tf side runs the
Rust tokenizer through tf.numpy_function, so seqio preprocessors can tokenize inside tf.data.
No special tokens (BOS etc.) are added: the unified vocabulary adds its own.
"""
from __future__ import annotations

import hashlib
import os
from typing import Optional, Sequence

import gin
import numpy as np
import seqio
import tensorflow as tf

from slm_jax.data.text.base import TextVocab, TextVocabError

_EOS_CANDIDATES = ("</s>", "<|endoftext|>", "<|end_of_text|>", "<eos>")


@gin.configurable
class HFTokenizerVocab(TextVocab, seqio.Vocabulary):
  """tokenizer.json (file or a directory holding one) as a seqio vocabulary.

  Args:
    path: tokenizer.json, or a model directory containing it.
    eos_token: the token seqio's decode stops at; by default the first of </s>,
      <|endoftext|>, <|end_of_text|>, <eos> that exists, else none.
    min_size: pad the text range to at least this many ids (an HF model's embedding table is
      often larger than its tokenizer, e.g. Qwen2), so `size` matches config.json's vocab_size.
  """

  kind = "hf_tokenizers"
  word_prefix = " "  # byte-level BPE marks word starts by the preceding space ("Ġword")

  def __init__(self, path: str, eos_token: Optional[str] = None, min_size: int = 0):
    if os.path.isdir(path):
      path = os.path.join(path, "tokenizer.json")
    if not os.path.exists(path):
      raise FileNotFoundError(f"Hugging Face tokenizer {path!r} does not exist (expected a "
                              "tokenizer.json or a model directory holding one)")
    super().__init__(extra_ids=0)
    self._path = path
    self._eos_token = eos_token
    self._min_size = int(min_size)
    self._tok = None
    with open(path, "rb") as f:
      self._sha1 = hashlib.sha1(f.read()).hexdigest()

  @property
  def tokenizer(self):
    if self._tok is None:
      import tokenizers  # pylint: disable=import-outside-toplevel
      try:
        self._tok = tokenizers.Tokenizer.from_file(self._path)
      except Exception as e:  # the Rust side raises a bare Exception
        raise TextVocabError(f"could not load Hugging Face tokenizer {self._path!r}: {e}") from e
    return self._tok

  def __getstate__(self):
    state = self.__dict__.copy()
    state["_tok"] = None
    return state

  @property
  def name(self) -> str:
    return f"hf_tokenizers:{self._sha1}"

  @property
  def eos_id(self) -> Optional[int]:
    names = [self._eos_token] if self._eos_token else _EOS_CANDIDATES
    for n in names:
      i = self.tokenizer.token_to_id(n)
      if i is not None:
        return int(i)
    if self._eos_token:
      raise TextVocabError(f"eos_token {self._eos_token!r} is not in {self._path}")
    return None

  @property
  def unk_id(self) -> Optional[int]:
    return None

  @property
  def _base_vocab_size(self) -> int:
    return max(int(self.tokenizer.get_vocab_size(with_added_tokens=True)), self._min_size)

  def _encode(self, s: str) -> Sequence[int]:
    return self.tokenizer.encode(s, add_special_tokens=False).ids

  def _decode(self, ids) -> str:
    n = self.tokenizer.get_vocab_size(with_added_tokens=True)
    return self.tokenizer.decode([int(i) for i in ids if 0 <= int(i) < n], skip_special_tokens=True)

  def encode_batch(self, texts: Sequence[str]) -> list[list[int]]:
    if not texts:
      return []
    return [e.ids for e in self.tokenizer.encode_batch(list(texts), add_special_tokens=False)]

  # -- tf side --------------------------------------------------------------------------------
  def _np_encode_batch(self, texts: np.ndarray):
    pieces = self.encode_batch([t.decode("utf-8") for t in texts.reshape(-1)])
    lens = np.array([len(p) for p in pieces], np.int64)
    flat = np.array([i for p in pieces for i in p], np.int32)
    return flat, lens

  def encode_batch_tf(self, texts):
    texts = tf.convert_to_tensor(texts, tf.string)
    flat, lens = tf.numpy_function(self._np_encode_batch, [texts], (tf.int32, tf.int64),
                                   stateful=False)
    flat.set_shape([None])
    lens.set_shape([None])
    return tf.RaggedTensor.from_row_lengths(flat, lens)

  def _encode_tf(self, s):
    s = tf.convert_to_tensor(s, tf.string)
    if s.shape.rank == 0:
      return self.encode_batch_tf(tf.reshape(s, [1])).flat_values
    return self.encode_batch_tf(s)

  def _np_decode(self, ids: np.ndarray) -> np.ndarray:
    if ids.ndim == 1:
      return np.array(self._decode(ids.tolist()).encode("utf-8"), dtype=object)
    rows = [self._decode(r.tolist()).encode("utf-8") for r in ids.reshape(-1, ids.shape[-1])]
    return np.array(rows, dtype=object).reshape(ids.shape[:-1])

  def _decode_tf(self, ids):
    ids = tf.convert_to_tensor(ids)
    out = tf.numpy_function(self._np_decode, [ids], tf.string, stateful=False)
    out.set_shape(ids.shape[:-1])
    return out

  def __eq__(self, other):
    return isinstance(other, HFTokenizerVocab) and other.name == self.name

  def __hash__(self):
    return hash(self.name)

  def __str__(self) -> str:
    return f"HFTokenizerVocab({self._path}, sha1={self._sha1[:12]})"
