"""Evaluation inputs: a manifest of utterances (audio + transcript [+ speaker]) or a text file.

A manifest is JSON lines, one utterance each, e.g. the demo corpus's `manifest_test.jsonl`:

    {"audio_path": "audio/test/a.wav", "text": "hello there", "speaker": "flite-slt", "id": "a"}

`audio_path` is relative to the manifest's folder (or absolute); `audio` is accepted as a
synonym. `speaker` and `id` are optional. A text file has one sentence per line.
"""
from __future__ import annotations

import dataclasses
import json
import os
from typing import Optional, Sequence

from slm_jax.data.transcript import normalize_transcript
from slm_jax.errors import SlmError


class EvalInputError(SlmError, ValueError):
  """An evaluation input that cannot be read (missing file, bad line, empty set)."""


@dataclasses.dataclass(frozen=True)
class EvalUtterance:
  id: str
  text: str                      # normalized transcript
  audio_path: Optional[str]      # absolute path, or None (text-only sets)
  speaker: str = ""


def read_manifest(path: str, *, max_examples: Optional[int] = None,
                  speakers: Optional[Sequence[str]] = None) -> list[EvalUtterance]:
  """Utterances of a manifest, optionally only those whose speaker contains one of `speakers`
  (e.g. ["flite"]) and at most `max_examples` of them (in file order)."""
  if not os.path.isfile(path):
    raise EvalInputError(f"manifest {path!r} does not exist")
  base = os.path.dirname(os.path.abspath(path))
  out = []
  with open(path, encoding="utf-8") as f:
    for n, line in enumerate(f, 1):
      if not line.strip():
        continue
      try:
        rec = json.loads(line)
      except json.JSONDecodeError as e:
        raise EvalInputError(f"{path}:{n}: not JSON ({e})") from None
      if not isinstance(rec, dict):
        raise EvalInputError(f"{path}:{n}: expected an object with audio_path and text")
      audio = rec.get("audio_path", rec.get("audio"))
      text = normalize_transcript(str(rec.get("text", "")))
      if not audio or not text:
        raise EvalInputError(f"{path}:{n}: needs a non-empty `audio_path` and `text`")
      speaker = str(rec.get("speaker", ""))
      if speakers and not any(s in speaker for s in speakers):
        continue
      out.append(EvalUtterance(str(rec.get("id", f"{n:05d}")), text,
                               os.path.join(base, audio), speaker))
      if max_examples is not None and len(out) >= max_examples:
        break
  if not out:
    which = f" with a speaker matching {list(speakers)}" if speakers else ""
    raise EvalInputError(f"manifest {path!r} has no utterances{which}")
  return out


def read_sentences(path: str, *, max_examples: Optional[int] = None) -> list[EvalUtterance]:
  """Sentences of a text file (one per line, blank lines skipped) as text-only utterances."""
  if not os.path.isfile(path):
    raise EvalInputError(f"text file {path!r} does not exist")
  out = []
  with open(path, encoding="utf-8") as f:
    for line in f:
      text = normalize_transcript(line)
      if text:
        out.append(EvalUtterance(f"{len(out):05d}", text, None))
      if max_examples is not None and len(out) >= max_examples:
        break
  if not out:
    raise EvalInputError(f"text file {path!r} has no sentences")
  return out


def parse_named(spec: str, default_name: str) -> tuple[str, str]:
  """`name=path` -> (name, path); a bare path is named `default_name`."""
  name, sep, path = spec.partition("=")
  if sep and name and "/" not in name:
    return name, path
  return default_name, spec
