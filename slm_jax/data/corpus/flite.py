"""flite (Debian `flite`) synthesis with word timings.

One utterance takes three flite readings: `-pw` on the sentence (flite's own word list, to reject
sentences whose text flite would read differently, e.g. "dr." -> "doctor"), `-ps` on the words
spoken one at a time (each word's phones, separated by pauses; fast `kal16` voice) and the real
synthesis with `-psdur` (spoken phones with end times). `align.word_times` joins the last two.

The first two cost less than starting flite, so `read_words` / `batch_pronunciations` read many
texts in one flite run: `-t TEXT` reads TEXT as one utterance, while a file (`-f`) is read
utterance by utterance, each on its own, starting a new one at a blank line. The texts go in one
file, separated by blank lines and a marker utterance, and flite prints one line per utterance,
so the lines between two marker lines are one text's reading, the same as with `-t`. A text
flite splits into several utterances is read again with `-t`; when the marker lines do not give
one group per text, the batch is halved until they do.
"""
import os
import shutil
import subprocess
import tempfile
from typing import Sequence

import numpy as np
import soundfile as sf

from slm_jax.data.corpus import align
from slm_jax.data.corpus.errors import missing_package

FLITE_VOICES = ("slt", "awb", "rms", "kal16")  # all 16 kHz ("kal" is 8 kHz)
_LEXICON_VOICE = "kal16"  # same CMU lexicon as the others, and the fastest
# An utterance read between the texts of a batch; its output line separates theirs.
_MARKER = "blick."  # a made-up word: read fast, and no sentence is just it


class TextMismatchError(ValueError):
  """flite would speak different words than the transcript says (numbers, abbreviations)."""


def flite_binary() -> str:
  path = shutil.which("flite")
  if path is None:
    raise missing_package("the `flite` program", "flite")
  return path


def _run(args: list[str], stdin: str | None = None) -> str:
  proc = subprocess.run([flite_binary()] + args, input=stdin, capture_output=True, text=True,
                        check=False)
  if proc.returncode != 0:
    raise RuntimeError(f"flite {' '.join(args)} failed ({proc.returncode}): {proc.stderr.strip()}")
  return proc.stdout


def _read(option: str, text: str) -> str:
  return _run(["-voice", _LEXICON_VOICE, option, "-t", text, "-o", "none"])


def _read_each(option: str, texts: Sequence[str]) -> list[list[str]]:
  """The whitespace-split output of `flite -voice kal16 OPTION -t text` for each text."""
  if len(texts) <= 1:
    return [_read(option, t).split() for t in texts]
  # The marker before each text and after the last one (flite may drop a file's last word
  # when no line break follows it).
  lines = _run(["-voice", _LEXICON_VOICE, option, "-f", "/dev/stdin", "-o", "none"],
               stdin="".join(f"{_MARKER}\n\n{t}\n\n" for t in texts) + _MARKER + "\n").splitlines()
  markers = [i for i, line in enumerate(lines) if line == lines[0]]
  if len(markers) != len(texts) + 1:  # a text read as the marker: halve until the groups match
    half = len(texts) // 2
    return _read_each(option, texts[:half]) + _read_each(option, texts[half:])
  groups = [lines[i + 1:j] for i, j in zip(markers, markers[1:])]
  # A text flite read as several utterances (it breaks at "?", "!", ":") is read on its own,
  # as one utterance, like `-t` does.
  return [group[0].split() if len(group) == 1 else _read(option, text).split()
          for text, group in zip(texts, groups)]


def _squash(words) -> str:
  """Comparable form of a word list: flite splits "it's" into "it 's" and drops apostrophes."""
  return " ".join(words).replace(" '", "'").replace("'", "")


def read_words(texts: Sequence[str]) -> list[list[str]]:
  """The words flite speaks for each text (one flite run for the batch)."""
  return _read_each("-pw", texts)


def check_words(text: str, words: list[str]) -> None:
  """Raises TextMismatchError unless flite reads `text` as exactly `words`."""
  mismatch = word_mismatches([text], [words])[0]
  if mismatch is not None:
    raise mismatch


def word_mismatches(texts: Sequence[str],
                    word_lists: Sequence[list[str]]) -> list["TextMismatchError | None"]:
  """For each text, None if flite reads it as exactly its words, else the TextMismatchError."""
  return [None if _squash(spoken) == _squash(words) else
          TextMismatchError(f"flite reads {text!r} as {' '.join(spoken)!r}")
          for text, words, spoken in zip(texts, word_lists, read_words(texts))]


def _group_phones(phones: list[str], words: list[str]) -> list[list[str]]:
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


def batch_pronunciations(word_lists: Sequence[list[str]]) -> list["list[list[str]] | TextMismatchError"]:
  """`word_pronunciations` of each word list (one flite run for the batch); a list whose words
  flite does not pronounce one by one gets its TextMismatchError instead."""
  out = []
  for words, phones in zip(word_lists, _read_each(
      "-ps", [" ".join(w + "." for w in words) for words in word_lists])):
    try:
      out.append(_group_phones(phones, words))
    except TextMismatchError as e:
      out.append(e)
  return out


def word_pronunciations(words: list[str]) -> list[list[str]]:
  """Each word's phones, from speaking the words one at a time ("w1. w2. ...")."""
  result = batch_pronunciations([words])[0]
  if isinstance(result, TextMismatchError):
    raise result
  return result


def parse_psdur(out: str) -> list[tuple[str, float]]:
  """`pau:0.164 hh:0.255 ...` -> [("pau", 0.164), ("hh", 0.255), ...]."""
  segments = []
  for item in out.split():
    phone, _, end = item.rpartition(":")
    segments.append((phone, float(end)))
  return segments


def synthesize(text: str, words: list[str], voice: str,
               pronunciations: list[list[str]] | None = None):
  """Speaks `text` with flite `voice`; `pronunciations` (each word's phones) defaults to
  `word_pronunciations(words)`.

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
