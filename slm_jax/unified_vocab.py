"""The unified token stream's vocabulary layout (docs/architecture.md, "The unified token stream").

    [0 pad][1 eos][2 bos][3 .. 3+R) reserved specials [text vocab][speech channel-0 codebook]

Speech frames have K channels; channel 0 lives in the unified id space, channels 1..K-1 travel in
`speech_codes[..., K-1]` with their own codebook sizes. The spec is saved as a small JSON file next
to every dataset cache and checkpoint and compared on load, so a model never silently reads ids
laid out for another vocabulary.
"""
from __future__ import annotations

import dataclasses
import json
import os
from typing import Sequence

import gin
import numpy as np

from slm_jax.atomic_write import atomic_write
from slm_jax.errors import SlmError

PAD_ID = 0
EOS_ID = 1
BOS_ID = 2
NUM_FIXED = 3

# Names of the reserved specials, in id order starting at NUM_FIXED. Unused slots are named
# <reserved_i> so that adding a special later does not shift the text and speech ranges.
DEFAULT_SPECIALS: tuple[str, ...] = (
    "[TEXT]", "[SPEECH]",            # modality switches (Spirit LM style)
    "[TEXT_LM]", "[SPEECH_LM]", "[ASR]", "[TTS]", "[INTERLEAVE]", "[INSTRUCT]",  # task tags
    "[USER]", "[ASSISTANT]", "[SEP]", "[EOT]",  # chat structure
)
DEFAULT_NUM_RESERVED = 32

SPEC_FILENAME = "vocab_spec.json"

MODALITY_SPECIAL = 0
MODALITY_TEXT = 1
MODALITY_SPEECH = 2


class VocabMismatchError(SlmError, ValueError):
  """Raised when data or a checkpoint was made for another unified vocabulary."""


@gin.configurable
def repeated_codebooks(size: int = gin.REQUIRED, channels: int = gin.REQUIRED) -> tuple[int, ...]:
  """`channels` speech channels of one codebook `size` each, e.g. dMel's 80 bins x 16 levels:
  `UnifiedVocab.speech_codebook_sizes = @repeated_codebooks()` in gin."""
  return (int(size),) * int(channels)


@gin.configurable
@dataclasses.dataclass(frozen=True)
class UnifiedVocab:
  """Layout of the unified vocabulary.

  Attributes:
    text_size: number of text-tokenizer ids (the text vocab's own 0..text_size-1).
    speech_codebook_sizes: codebook size of each speech channel; len() == K.
    specials: names of the reserved specials, in order; padded to `num_reserved` slots.
    num_reserved: R, the number of reserved special slots.
    text_vocab_name: identity of the text tokenizer (e.g. "sentencepiece:<sha1>"), checked on load.
    speech_tokenizer_name: identity of the speech tokenizer (e.g. "dmel-80x16@80Hz").
  """
  text_size: int = 256
  speech_codebook_sizes: tuple[int, ...] = (1024,)
  specials: tuple[str, ...] = DEFAULT_SPECIALS
  num_reserved: int = DEFAULT_NUM_RESERVED
  text_vocab_name: str = ""
  speech_tokenizer_name: str = ""

  def __post_init__(self):
    object.__setattr__(self, "speech_codebook_sizes", tuple(int(c) for c in self.speech_codebook_sizes))
    object.__setattr__(self, "specials", tuple(self.specials))
    if self.text_size < 0:
      raise ValueError(f"text_size must be >= 0, got {self.text_size}")
    if not self.speech_codebook_sizes or min(self.speech_codebook_sizes) < 1:
      raise ValueError("speech_codebook_sizes needs K >= 1 channels, each with codebook size >= 1; "
                       f"got {self.speech_codebook_sizes}")
    if len(self.specials) > self.num_reserved:
      raise ValueError(f"{len(self.specials)} specials do not fit in num_reserved={self.num_reserved}")
    if len(set(self.specials)) != len(self.specials):
      raise ValueError(f"duplicate special names in {self.specials}")

  # -- ranges ---------------------------------------------------------------------------------
  @property
  def num_channels(self) -> int:
    """K, the number of speech channels per frame."""
    return len(self.speech_codebook_sizes)

  @property
  def text_start(self) -> int:
    return NUM_FIXED + self.num_reserved

  @property
  def speech_start(self) -> int:
    return self.text_start + self.text_size

  @property
  def size(self) -> int:
    """Number of unified ids (before any padding the model adds for efficiency)."""
    return self.speech_start + self.speech_codebook_sizes[0]

  @property
  def extra_codebook_sizes(self) -> tuple[int, ...]:
    """Codebook sizes of channels 1..K-1 (empty when K == 1)."""
    return self.speech_codebook_sizes[1:]

  def special_id(self, name: str) -> int:
    """Unified id of a reserved special by name, e.g. special_id("[ASR]")."""
    fixed = {"<pad>": PAD_ID, "<eos>": EOS_ID, "<bos>": BOS_ID}
    if name in fixed:
      return fixed[name]
    try:
      return NUM_FIXED + self.specials.index(name)
    except ValueError:
      raise KeyError(f"unknown special {name!r}; known: {list(fixed) + list(self.specials)}") from None

  # -- conversions (numpy or jax arrays) ------------------------------------------------------
  def text_to_unified(self, text_ids):
    _check_range(text_ids, self.text_size, "text id")
    return text_ids + self.text_start

  def speech_to_unified(self, codes0):
    _check_range(codes0, self.speech_codebook_sizes[0], "speech channel-0 code")
    return codes0 + self.speech_start

  def unified_to_text(self, ids):
    return ids - self.text_start

  def unified_to_speech(self, ids):
    return ids - self.speech_start

  def modality(self, ids):
    """0 for specials/pad/eos/bos, 1 for text, 2 for speech; works on numpy and jax arrays."""
    xp = _array_module(ids)
    return xp.where(ids >= self.speech_start, MODALITY_SPEECH,
                    xp.where(ids >= self.text_start, MODALITY_TEXT, MODALITY_SPECIAL)).astype(xp.int32)

  def is_speech(self, ids):
    return ids >= self.speech_start

  def is_text(self, ids):
    return (ids >= self.text_start) & (ids < self.speech_start)

  # -- spec file ------------------------------------------------------------------------------
  def to_dict(self) -> dict:
    d = dataclasses.asdict(self)
    d["speech_codebook_sizes"] = list(self.speech_codebook_sizes)
    d["specials"] = list(self.specials)
    d["layout"] = {"text_start": self.text_start, "speech_start": self.speech_start, "size": self.size}
    return d

  @classmethod
  def from_dict(cls, d: dict) -> "UnifiedVocab":
    fields = {f.name for f in dataclasses.fields(cls)}
    return cls(**{k: (tuple(v) if isinstance(v, list) else v) for k, v in d.items() if k in fields})

  def save(self, directory: str) -> str:
    """Writes `vocab_spec.json` into `directory` (atomically) and returns its path."""
    os.makedirs(directory, exist_ok=True)
    path = os.path.join(directory, SPEC_FILENAME)
    atomic_write(path, json.dumps(self.to_dict(), indent=2, sort_keys=True))
    return path

  @classmethod
  def load(cls, directory_or_file: str) -> "UnifiedVocab":
    path = directory_or_file
    if os.path.isdir(path):
      path = os.path.join(path, SPEC_FILENAME)
    if not os.path.exists(path):
      raise FileNotFoundError(f"no vocabulary spec at {path}: it is written next to every dataset "
                              "cache and checkpoint; rebuild the cache or pass the right directory")
    with open(path) as f:
      return cls.from_dict(json.load(f))

  def check_compatible(self, other: "UnifiedVocab", what: str = "data") -> None:
    """Raises VocabMismatchError naming every field where `other` (from `what`) differs."""
    diffs = []
    for f in dataclasses.fields(self):
      a, b = getattr(self, f.name), getattr(other, f.name)
      if a != b:
        diffs.append(f"{f.name}: expected {a!r}, {what} has {b!r}")
    if diffs:
      raise VocabMismatchError(
          f"the {what} was made for a different unified vocabulary:\n  " + "\n  ".join(diffs) +
          f"\nRebuild the {what} with this vocabulary, or configure the model's UnifiedVocab to match.")

  def check_against_saved(self, directory: str, what: str = "data") -> None:
    self.check_compatible(UnifiedVocab.load(directory), what=what)


def _array_module(x):
  if isinstance(x, np.ndarray) or np.isscalar(x):
    return np
  import jax.numpy as jnp  # pylint: disable=import-outside-toplevel
  return jnp


def _check_range(ids, size: int, what: str) -> None:
  if isinstance(ids, (np.ndarray, int, np.integer)) or (isinstance(ids, Sequence)):
    a = np.asarray(ids)
    if a.size and (a.min() < 0 or a.max() >= size):
      bad = a[(a < 0) | (a >= size)].ravel()[:5]
      raise ValueError(f"{what} out of range [0, {size}): e.g. {bad.tolist()}; check that the "
                       "tokenizer matches the vocabulary spec")
