"""Clean English sentences from Debian's `fortunes` package (offline text source).

A fortune file holds records separated by lines containing only `%`. A record becomes one
"sentence" (it may hold a few short sentences) when, after joining its lines and collapsing
whitespace, it has 15-100 characters made only of letters, spaces and simple punctuation.
"""
import os
import re
from typing import Iterator

import gin

from slm_jax.data.corpus.errors import missing_package
from slm_jax.data.transcript import normalize_transcript

FORTUNES_DIR = "/usr/share/games/fortunes"
_ALLOWED = re.compile(r"^[A-Za-z ,.;:!?'\"()-]+$")
_SPACES = re.compile(r"\s+")
_ATTRIBUTION = re.compile(r"\s--\s.*$")  # "... -- Mark Twain"


def fortune_files(fortunes_dir: str = FORTUNES_DIR) -> list[str]:
  """The fortune text files (not the .dat indexes, not the offensive `off/` folder)."""
  if not os.path.isdir(fortunes_dir):
    raise missing_package(f"fortunes folder {fortunes_dir}", "fortunes")
  names = sorted(n for n in os.listdir(fortunes_dir)
                 if not n.endswith((".dat", ".u8")) and
                 os.path.isfile(os.path.join(fortunes_dir, n)))
  if not names:
    raise missing_package(f"fortune files in {fortunes_dir}", "fortunes")
  return [os.path.join(fortunes_dir, n) for n in names]


def split_records(raw: str) -> Iterator[str]:
  """Splits a fortune file's text on `%` lines; yields each record's text."""
  record = []
  for line in raw.splitlines():
    if line.strip() == "%":
      if record:
        yield "\n".join(record)
      record = []
    else:
      record.append(line)
  if record:
    yield "\n".join(record)


def clean_sentence(record: str, min_chars: int = 15, max_chars: int = 100) -> str | None:
  """Whitespace-normalized record text for synthesis, or None if it fails the filter."""
  text = _ATTRIBUTION.sub("", _SPACES.sub(" ", record)).strip()
  if not _ALLOWED.match(text):
    return None
  text = _SPACES.sub(" ", text.replace('"', "")).strip()
  if not (min_chars <= len(text) <= max_chars) or not any(c.isalpha() for c in text):
    return None
  return text


@gin.configurable
def fortune_sentences(fortunes_dir: str = FORTUNES_DIR, min_chars: int = 15,
                      max_chars: int = 100) -> list[str]:
  """All clean, distinct fortune sentences (synthesis text), in a stable order."""
  seen, out = set(), []
  for path in fortune_files(fortunes_dir):
    with open(path, encoding="utf-8", errors="replace") as f:
      raw = f.read()
    for record in split_records(raw):
      sentence = clean_sentence(record, min_chars, max_chars)
      if sentence is None:
        continue
      key = normalize_transcript(sentence)
      if key and key not in seen:
        seen.add(key)
        out.append(sentence)
  return out
