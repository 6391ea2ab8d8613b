"""Character targets for the CTC head: each text id's spelling over a fixed alphabet.

With `ModelConfig.ctc_alphabet` set, the auxiliary CTC head (models/ctc.py) predicts characters
instead of text ids: class 0 is the blank, class i the alphabet's i-th character (from 1). The
transcript in a batch is text ids, so the loss spells each id through a `CtcSpelling` table built
from the text tokenizer (`LossOptions.ctc_spelling = @ctc_spelling()`); decoding maps classes
back to characters with the alphabet alone (`decode`), so inference needs no table.

Why characters: the metric the demo is held to is a character error rate, a 512-piece vocabulary
leaves most pieces rare in a few hours of speech, and a character head can write the letters it
hears when it cannot name the piece (BENCHMARKS.md, "Character-level CTC").

A piece's characters outside the alphabet are left out of its spelling (e.g. digits with an
alphabet of letters); `dropped` lists them so a caller can report them.
"""
from __future__ import annotations

import dataclasses
import logging
import re

import gin
import numpy as np

from slm_jax.configuration import ConfigError

# Lowercase English letters, the apostrophe and the word boundary: what the demo's transcript
# normalization (data/transcript.py) leaves.
ENGLISH_ALPHABET = " 'abcdefghijklmnopqrstuvwxyz"


def check_alphabet(alphabet: str) -> None:
  if len(set(alphabet)) != len(alphabet):
    raise ConfigError(f"ctc_alphabet {alphabet!r} repeats a character; list each once")


@dataclasses.dataclass(frozen=True)
class CtcSpelling:
  """Per text id, its characters as CTC classes (1..len(alphabet)); hashable (a static option)."""
  alphabet: str
  spellings: tuple[tuple[int, ...], ...]
  dropped: str = ""     # characters of the vocabulary's pieces that are not in the alphabet

  @property
  def num_classes(self) -> int:
    """Classes of the CTC head, the blank included."""
    return len(self.alphabet) + 1

  def table(self) -> np.ndarray:
    """int32[text_size, P]: the classes of each id's spelling, 0-padded (P = longest, >= 1)."""
    width = max([1] + [len(s) for s in self.spellings])
    out = np.zeros((len(self.spellings), width), np.int32)
    for i, s in enumerate(self.spellings):
      out[i, :len(s)] = s
    return out

  def spell(self, text_ids) -> list[int]:
    """Text ids -> the classes of their characters (the CTC labels of a transcript)."""
    return [c for i in np.asarray(text_ids).tolist() for c in self.spellings[i]]


def decode(alphabet: str, classes) -> str:
  """Collapsed CTC classes (no blanks) -> text, word boundaries normalized to single spaces."""
  text = "".join(alphabet[c - 1] for c in np.asarray(classes).tolist() if 0 < c <= len(alphabet))
  return re.sub(r"\s+", " ", text).strip()


def spelling_from_vocab(text_vocab, alphabet: str, text_size: int | None = None) -> CtcSpelling:
  """The spelling table of a text vocabulary (TextVocab.piece_spellings) over `alphabet`."""
  check_alphabet(alphabet)
  if not alphabet:
    raise ConfigError("ctc_spelling needs a non-empty alphabet (ModelConfig.ctc_alphabet)")
  pieces = list(text_vocab.piece_spellings())
  size = len(pieces) if text_size is None else int(text_size)
  if len(pieces) > size:
    raise ConfigError(f"the text vocabulary spells {len(pieces)} ids but the model has "
                      f"text_size={size}; use the tokenizer the model was built for")
  pieces += [""] * (size - len(pieces))       # extra ids write nothing
  index = {ch: i + 1 for i, ch in enumerate(alphabet)}
  dropped = sorted({ch for p in pieces for ch in p if ch not in index})
  if dropped:
    logging.warning("CTC spelling: characters %r of the text vocabulary are not in the alphabet "
                    "%r and are left out of the character targets", "".join(dropped), alphabet)
  spellings = tuple(tuple(index[ch] for ch in p if ch in index) for p in pieces)
  return CtcSpelling(alphabet, spellings, "".join(dropped))


@gin.configurable
def ctc_spelling(text_tokenizer: str = gin.REQUIRED, alphabet: str = ENGLISH_ALPHABET,
                 kind: str = "sentencepiece") -> CtcSpelling:
  """gin: `LossOptions.ctc_spelling = @ctc_spelling()`, `ctc_spelling.text_tokenizer = PATH`."""
  from slm_jax.data.text.factory import get_text_vocabulary  # pylint: disable=import-outside-toplevel
  return spelling_from_vocab(get_text_vocabulary(kind, text_tokenizer), alphabet)
