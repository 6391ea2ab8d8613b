"""Readers for the published spoken-LM pair sets' file layouts (the data is not shipped).

ZeroSpeech 2021 sWUGGY (`lexical/dev`) and sBLIMP (`syntactic/dev`): a folder of `<filename>.wav`
files and `gold.csv` with a header naming at least `filename`, `id`, `correct` (1 for the real
word / grammatical sentence, 0 for the other) and, when known, `voice` and the text (`word` for
lexical, `transcription` for syntactic). The rows with the same (id, voice) form one pair.

Spoken / topic StoryCloze (Hassid et al. 2023): a folder of wavs whose names start with the
story's number, `<n>_<label>.wav`, two per story, the label of the true ending containing
"correct" (the other "incorrect"; "true"/"false" and "pos"/"neg" are read too). Each wav holds
the whole spoken story, so the pair is scored as whole utterances (no separate prompt; the
speech condition only).
"""
from __future__ import annotations

import csv
import os
import re
from typing import Optional

from slm_jax.evaluation.eval_sets import EvalInputError
from slm_jax.evaluation.pairwise import Pair, Side

GOLD_FILE = "gold.csv"
_TEXT_COLUMNS = ("word", "transcription", "text")
_STORY = re.compile(r"^(\d+)[_+](.+)$")
_POSITIVE = ("correct", "true", "pos", "positive")
_NEGATIVE = ("incorrect", "false", "neg", "negative", "wrong")


def read_zerospeech(folder: str, max_pairs: Optional[int] = None) -> list[Pair]:
  """Pairs of a ZeroSpeech 2021 lexical or syntactic folder (see the module docstring)."""
  gold = os.path.join(folder, GOLD_FILE)
  with open(gold, newline="", encoding="utf-8") as f:
    rows = list(csv.DictReader(f))
  need = {"filename", "id", "correct"}
  if not rows or not need <= set(rows[0]):
    raise EvalInputError(f"{gold}: expected a header with {sorted(need)} (ZeroSpeech 2021 "
                         f"layout), got {sorted(rows[0]) if rows else 'no rows'}")
  text_col = next((c for c in _TEXT_COLUMNS if c in rows[0]), None)
  groups: dict[tuple, dict] = {}
  for row in rows:
    key = (row["id"], row.get("voice", ""))
    side = Side(row.get(text_col, "") if text_col else "",
                os.path.join(folder, row["filename"] + ".wav"))
    label = "pos" if str(row["correct"]).strip() in ("1", "True", "true") else "neg"
    groups.setdefault(key, {})[label] = side
  out = []
  for (pid, voice), sides in groups.items():
    if set(sides) != {"pos", "neg"}:
      raise EvalInputError(f"{gold}: id {pid} voice {voice!r} does not have one correct and one "
                           "incorrect file")
    for side in sides.values():
      if not os.path.exists(side.audio):
        raise EvalInputError(f"{gold} names {side.audio}, which does not exist")
    out.append(Pair(f"{pid}/{voice}" if voice else pid, sides["pos"], sides["neg"]))
    if max_pairs is not None and len(out) >= max_pairs:
      break
  return out


def _label(rest: str) -> Optional[str]:
  rest = rest.lower()
  if any(rest.startswith(n) or rest.endswith(n) for n in _NEGATIVE):
    return "neg"
  if any(rest.startswith(p) or rest.endswith(p) for p in _POSITIVE):
    return "pos"
  return None


def looks_like_storycloze(folder: str) -> bool:
  wavs = [f for f in os.listdir(folder) if f.endswith(".wav")]
  return bool(wavs) and all(_STORY.match(os.path.splitext(f)[0]) for f in wavs)


def read_storycloze(folder: str, max_pairs: Optional[int] = None) -> list[Pair]:
  """Pairs of a spoken / topic StoryCloze folder (see the module docstring)."""
  groups: dict[int, dict] = {}
  for f in sorted(os.listdir(folder)):
    m = _STORY.match(os.path.splitext(f)[0]) if f.endswith(".wav") else None
    if not m:
      continue
    label = _label(m.group(2))
    if label is None:
      raise EvalInputError(f"{os.path.join(folder, f)}: cannot tell whether this is the true "
                           "ending (expected <n>_correct.wav or <n>_incorrect.wav)")
    groups.setdefault(int(m.group(1)), {})[label] = Side("", os.path.join(folder, f))
  out = []
  for n in sorted(groups):
    if set(groups[n]) != {"pos", "neg"}:
      raise EvalInputError(f"{folder}: story {n} needs one correct and one incorrect wav")
    out.append(Pair(str(n), groups[n]["pos"], groups[n]["neg"]))
    if max_pairs is not None and len(out) >= max_pairs:
      break
  if not out:
    raise EvalInputError(f"{folder}: no <n>_correct.wav / <n>_incorrect.wav files")
  return out
