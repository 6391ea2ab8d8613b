"""flite (Debian `flite`) synthesis with word timings.

One utterance takes three flite runs: `-pw` on the sentence (flite's own word list, to reject
sentences whose text flite would read differently, e.g. "dr." -> "doctor"), `-ps` on the words
spoken one at a time (each word's phones, separated by pauses; fast `kal16` voice) and the real
synthesis with `-psdur` (spoken phones with end times). `align.word_times` joins the last two.
"""
import os
import shutil
import subprocess
import tempfile

import numpy as np
import soundfile as sf

from slm_jax.data.corpus import align
from slm_jax.data.corpus.errors import missing_package

FLITE_VOICES = ("slt", "awb", "rms", "kal16")  # all 16 kHz ("kal" is 8 kHz)
_LEXICON_VOICE = "kal16"  # same CMU lexicon as the others, and the fastest


class TextMismatchError(ValueError):
  """flite would speak different words than the transcript says (numbers, abbreviations)."""


def flite_binary() -> str:
  path = shutil.which("flite")
  if path is None:
    raise missing_package("the `flite` program", "flite")
  return path


def _run(args: list[str]) -> str:
  proc = subprocess.run([flite_binary()] + args, capture_output=True, text=True, check=False)
  if proc.returncode != 0:
    raise RuntimeError(f"flite {' '.join(args)} failed ({proc.returncode}): {proc.stderr.strip()}")
  return proc.stdout


def _squash(words) -> str:
  """Comparable form of a word list: flite splits "it's" into "it 's" and drops apostrophes."""
  return " ".join(words).replace(" '", "'").replace("'", "")


def check_words(text: str, words: list[str]) -> None:
  """Raises TextMismatchError unless flite reads `text` as exactly `words`."""
  spoken = _run(["-voice", _LEXICON_VOICE, "-pw", "-t", text, "-o", "none"]).split()
  if _squash(spoken) != _squash(words):
    raise TextMismatchError(f"flite reads {text!r} as {' '.join(spoken)!r}")


def word_pronunciations(words: list[str]) -> list[list[str]]:
  """Each word's phones, from speaking the words one at a time ("w1. w2. ...")."""
  phones = _run(["-voice", _LEXICON_VOICE, "-ps", "-t", " ".join(w + "." for w in words),
                 "-o", "none"]).split()
  groups, current = [], []
  for p in phones:
    if p in align.SILENCE_PHONES:
      if current:
        groups.append(current)
      current = []
    else:
      current.append(p)
  if current:
    groups.append(current)
  if len(groups) != len(words):
    raise TextMismatchError(f"flite gave {len(groups)} pronunciations for {len(words)} words")
  return groups


def parse_psdur(out: str) -> list[tuple[str, float]]:
  """`pau:0.164 hh:0.255 ...` -> [("pau", 0.164), ("hh", 0.255), ...]."""
  segments = []
  for item in out.split():
    phone, _, end = item.rpartition(":")
    segments.append((phone, float(end)))
  return segments


def synthesize(text: str, words: list[str], voice: str,
               pronunciations: list[list[str]] | None = None):
  """Speaks `text` with flite `voice`.

  Returns:
    (audio int16[P] at 16 kHz, word_starts[W], word_ends[W]) for the transcript `words`.
  """
  if voice not in FLITE_VOICES:
    raise ValueError(f"unknown flite voice {voice!r}; use one of {FLITE_VOICES}")
  if pronunciations is None:
    pronunciations = word_pronunciations(words)
  fd, wav_path = tempfile.mkstemp(suffix=".wav")
  os.close(fd)
  try:
    out = _run(["-voice", voice, "-psdur", "-t", text, "-o", wav_path])
    audio, rate = sf.read(wav_path, dtype="int16")
  finally:
    os.unlink(wav_path)
  if rate != 16000:
    raise RuntimeError(f"flite voice {voice} produced {rate} Hz audio; expected 16000")
  starts, ends = align.word_times(pronunciations, parse_psdur(out))
  duration = len(audio) / rate
  ends = [min(e, duration) for e in ends]
  return np.asarray(audio, np.int16), starts, ends
