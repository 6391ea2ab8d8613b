"""SentencePiece vocabulary (seqio.SentencePieceVocabulary + identity + encode_words) and training.

Models trained here reserve 0=pad, 1=eos, 2=unk (seqio's convention) and have no BOS piece: the
unified vocabulary adds its own BOS/EOS. Existing .model files (T5, Llama-2 style) load as they are.
"""
from __future__ import annotations

import hashlib
import os
import tempfile
from typing import Sequence, Union

import gin
import seqio

from slm_jax.atomic_write import atomic_write
from slm_jax.data.text.base import TextVocab, TextVocabError


@gin.configurable
class SentencePieceVocab(TextVocab, seqio.SentencePieceVocabulary):
  """A sentencepiece .model file as a seqio vocabulary with `name` and `encode_words`."""

  kind = "sentencepiece"
  word_prefix = ""  # sentencepiece prepends "▁" to each word itself

  def __init__(self, model_file: str, extra_ids: int = 0):
    if not os.path.exists(model_file):
      raise FileNotFoundError(f"sentencepiece model {model_file!r} does not exist; train one with "
                              "`slm-data train-spm --input FILE --vocab_size N --out PREFIX`")
    super().__init__(model_file, extra_ids=extra_ids)

  @property
  def name(self) -> str:
    return f"sentencepiece:{hashlib.sha1(self.sp_model).hexdigest()}"

  def encode_batch(self, texts: Sequence[str]) -> list[list[int]]:
    # One call per text: sentencepiece's list form starts a thread pool per call, which costs
    # more than a sentence's few words (measured: 4x slower alone, and the demo's cache spent
    # 10 s of its 100 in it beside tf.data's threads).
    sp = self.tokenizer
    return [sp.EncodeAsIds(t) for t in texts]

  def encode_batch_tf(self, texts):
    return self.tf_tokenizer.tokenize(texts)

  def piece_spellings(self) -> list[str]:
    sp = self.tokenizer
    return ["" if sp.is_control(i) or sp.is_unknown(i) else
            (chr(int(sp.id_to_piece(i)[1:-1], 16)) if sp.is_byte(i) else
             sp.id_to_piece(i).replace("\u2581", " "))
            for i in range(sp.get_piece_size())]

  def __hash__(self):
    return hash(self.name)


@gin.configurable
def train_sentencepiece(input_path: Union[str, Sequence[str]], vocab_size: int, out_prefix: str,
                        model_type: str = "unigram", character_coverage: float = 1.0,
                        input_sentence_size: int = 1_000_000, num_threads: int = 1,
                        user_defined_symbols: Sequence[str] = (),
                        byte_fallback: bool = False, seed: int = 0) -> str:
  """Trains a sentencepiece model on text file(s) (one sentence per line); returns PREFIX.model.

  Ids 0/1/2 are pad/eos/unk, no BOS. One thread and a fixed `seed` keep it deterministic: the
  same corpus and settings give a byte-identical model (training paths are not stored in it).
  Training happens in a temporary folder; PREFIX.vocab and PREFIX.model appear atomically.
  """
  import sentencepiece as spm  # pylint: disable=import-outside-toplevel
  paths = [input_path] if isinstance(input_path, str) else list(input_path)
  for p in paths:
    if not os.path.exists(p):
      raise FileNotFoundError(f"training text {p!r} does not exist")
    if os.path.getsize(p) == 0:
      raise TextVocabError(f"training text {p!r} is empty")
  out_dir = os.path.dirname(os.path.abspath(out_prefix))
  os.makedirs(out_dir, exist_ok=True)
  spm.set_random_generator_seed(int(seed))
  with tempfile.TemporaryDirectory(dir=out_dir, prefix=".spm-") as tmp:
    tmp_prefix = os.path.join(tmp, "spm")
    _train(spm, paths, tmp_prefix, vocab_size=int(vocab_size), model_type=model_type,
           character_coverage=character_coverage, input_sentence_size=int(input_sentence_size),
           num_threads=int(num_threads), user_defined_symbols=list(user_defined_symbols),
           byte_fallback=byte_fallback)
    with open(tmp_prefix + ".vocab", "rb") as f:
      atomic_write(out_prefix + ".vocab", f.read())
    model = out_prefix + ".model"
    atomic_write(model, _without_paths(tmp_prefix + ".model"))
  return model


def _train(spm, paths: list[str], model_prefix: str, *, vocab_size: int, model_type: str,
           character_coverage: float, input_sentence_size: int, num_threads: int,
           user_defined_symbols: list[str], byte_fallback: bool) -> None:
  try:
    spm.SentencePieceTrainer.train(
        input=",".join(paths), model_prefix=model_prefix, vocab_size=vocab_size,
        model_type=model_type, character_coverage=character_coverage,
        input_sentence_size=input_sentence_size, shuffle_input_sentence=True,
        num_threads=num_threads, pad_id=0, eos_id=1, unk_id=2, bos_id=-1,
        user_defined_symbols=user_defined_symbols, byte_fallback=byte_fallback, minloglevel=2)
  except RuntimeError as e:
    msg = str(e)
    hint = ("the corpus is too small for this vocab_size: pass a smaller --vocab_size"
            if "Vocabulary size" in msg or "vocab_size" in msg else "see the message above")
    raise TextVocabError(f"sentencepiece training on {paths} failed: {msg}\n{hint}") from e


def _without_paths(model_file: str) -> bytes:
  """The model with the training paths stored in its proto cleared, so the same corpus and
  settings give byte-identical models (and the same `name`) wherever they were trained."""
  from sentencepiece import sentencepiece_model_pb2  # pylint: disable=import-outside-toplevel
  proto = sentencepiece_model_pb2.ModelProto()
  with open(model_file, "rb") as f:
    proto.ParseFromString(f.read())
  proto.trainer_spec.model_prefix = ""
  del proto.trainer_spec.input[:]
  return proto.SerializeToString(deterministic=True)
