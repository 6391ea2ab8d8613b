"""Offline spoken-LM pair sets built from the demo corpus (`slm-data build-demo` output).

Three sets from the held-out test sentences (`texts_test.txt`), spoken with flite:

  words    a real word vs a non-word made from it by changing one letter for another of its
           kind (vowel for vowel, consonant for consonant), so it stays pronounceable and is
           not a word of the corpus (sWUGGY-like)
  syntax   a sentence vs the same words scrambled (sBLIMP-like, though coarser than minimal
           pairs)
  cloze    the first half of a sentence as the prompt, its true second half vs the second
           half of another sentence of similar length (topic StoryCloze-like)

The voice is a flite voice the corpus did not train on when one is installed (`flite -lv`;
`kal` is the 8 kHz diphone voice, the same speaker as the corpus's `kal16` but another
synthesizer), otherwise a training voice, said in info.json. Layout (read by
`pairwise.load_pair_sets`):

    OUT/words.jsonl, OUT/syntax.jsonl, OUT/cloze.jsonl   one pair per line
    OUT/audio/<set>/<id>_{pos,neg,prompt}.wav
    OUT/info.json                                         voice, held out or not, counts
"""
from __future__ import annotations

import json
import os
import subprocess
from typing import Optional

import numpy as np

from slm_jax.atomic_write import atomic_path, atomic_write
from slm_jax.data.transcript import normalize_transcript
from slm_jax.evaluation.eval_sets import EvalInputError

VOWELS = "aeiou"
CONSONANTS = "bcdfghjklmnpqrstvwxz"
# Voices for arbitrary English text, preferred first; `*_time` voices only say the time.
PREFERRED_VOICES = ("kal", "slt", "awb", "rms", "kal16")


def available_voices() -> list[str]:
  """The voices `flite -lv` lists (general-purpose ones only)."""
  from slm_jax.data.corpus.flite import flite_binary  # pylint: disable=import-outside-toplevel
  out = subprocess.run([flite_binary(), "-lv"], capture_output=True, text=True, check=False).stdout
  names = out.split(":", 1)[-1].split()
  return [v for v in names if not v.endswith("_time")]


def training_voices(corpus_dir: str) -> set[str]:
  """flite voice names the corpus was built with (build_info.json "voices": "flite:slt@3")."""
  path = os.path.join(corpus_dir, "build_info.json")
  if not os.path.exists(path):
    return set()
  with open(path) as f:
    voices = json.load(f).get("voices", [])
  return {v.split("@")[0].split(":")[1] for v in voices if v.startswith("flite:")}


def choose_voice(corpus_dir: str, voice: Optional[str] = None) -> tuple[str, bool]:
  """(voice, held out of the corpus's training voices)."""
  have = available_voices()
  used = training_voices(corpus_dir)
  if voice:
    if voice not in have:
      raise EvalInputError(f"flite has no voice {voice!r}; `flite -lv` lists {have}")
    return voice, voice not in used
  ordered = [v for v in PREFERRED_VOICES if v in have] + [v for v in have
                                                          if v not in PREFERRED_VOICES]
  if not ordered:
    raise EvalInputError("flite lists no voices (`flite -lv`)")
  for v in ordered:
    if v not in used:
      return v, True
  return ordered[0], False


def speak(text: str, voice: str, path: str) -> str:
  """flite speaks `text` into the wav `path` (written atomically)."""
  from slm_jax.data.corpus.flite import flite_binary  # pylint: disable=import-outside-toplevel
  with atomic_path(path, suffix=".wav") as tmp:
    proc = subprocess.run([flite_binary(), "-voice", voice, "-t", text, "-o", tmp],
                          capture_output=True, text=True, check=False)
    if proc.returncode != 0:
      raise RuntimeError(f"flite -voice {voice} failed on {text!r}: {proc.stderr.strip()}")
  return path


def nonword(word: str, lexicon: set[str], rng: np.random.Generator,
            tries: int = 50) -> Optional[str]:
  """`word` with one letter replaced by another of its kind, not in `lexicon` (None if none)."""
  letters = [i for i, c in enumerate(word) if c in VOWELS or c in CONSONANTS]
  for _ in range(tries):
    i = int(rng.choice(letters))
    pool = VOWELS if word[i] in VOWELS else CONSONANTS
    c = str(rng.choice([x for x in pool if x != word[i]]))
    cand = word[:i] + c + word[i + 1:]
    if cand not in lexicon:
      return cand
  return None


def _read_lines(path: str) -> list[str]:
  if not os.path.exists(path):
    return []
  with open(path, encoding="utf-8") as f:
    return [s for s in (normalize_transcript(line) for line in f) if s]


def make_pairs(sentences: list[str], lexicon: set[str], num_pairs: int,
               seed: int = 0) -> dict[str, list[dict]]:
  """The three sets' pairs as text ({"id", "positive", "negative"[, "prompt"]}; no audio)."""
  rng = np.random.default_rng(seed)
  order = rng.permutation(len(sentences))
  sents = [sentences[i] for i in order
           if all(len(w) > 1 or w in ("a", "i") for w in sentences[i].split())]
  words, seen = [], set()
  for s in sents:
    for w in s.split():
      if len(w) >= 4 and w.isalpha() and w not in seen:
        seen.add(w)
        words.append(w)
  out: dict[str, list[dict]] = {"words": [], "syntax": [], "cloze": []}
  for w in words:
    if len(out["words"]) >= num_pairs:
      break
    nw = nonword(w, lexicon, rng)
    if nw:
      out["words"].append({"id": f"w{len(out['words']):04d}", "positive": {"text": w},
                           "negative": {"text": nw}})
  for s in sents:
    if len(out["syntax"]) >= num_pairs:
      break
    ws = s.split()
    if not 4 <= len(ws) <= 14:
      continue
    shuffled = list(ws)
    for _ in range(10):
      rng.shuffle(shuffled)
      if shuffled != ws:
        break
    if shuffled != ws:
      out["syntax"].append({"id": f"s{len(out['syntax']):04d}", "positive": {"text": s},
                            "negative": {"text": " ".join(shuffled)}})
  halves = [(s.split()[:len(s.split()) // 2], s.split()[len(s.split()) // 2:])
            for s in sents if 6 <= len(s.split()) <= 20]
  for i, (head, tail) in enumerate(halves):
    if len(out["cloze"]) >= num_pairs:
      break
    others = [t for j, (_, t) in enumerate(halves) if j != i and t != tail
              and abs(len(t) - len(tail)) <= 2]
    if not others:
      continue
    other = others[int(rng.integers(len(others)))]
    out["cloze"].append({"id": f"c{len(out['cloze']):04d}", "prompt": {"text": " ".join(head)},
                         "positive": {"text": " ".join(tail)},
                         "negative": {"text": " ".join(other)}})
  return out


def build_demo_pair_sets(corpus_dir: str, out_dir: str, *, num_pairs: int = 64,
                         voice: Optional[str] = None, seed: int = 0) -> dict:
  """Writes the three sets (text + flite audio) to `out_dir`; returns info.json's contents."""
  if not os.path.isdir(corpus_dir):
    raise EvalInputError(f"corpus folder {corpus_dir!r} does not exist (slm-data build-demo)")
  sentences = _read_lines(os.path.join(corpus_dir, "texts_test.txt"))
  if not sentences:
    raise EvalInputError(f"{corpus_dir}/texts_test.txt is missing or empty: build the corpus "
                         "with `slm-data build-demo`")
  lexicon = set()
  for name in ("texts.txt", "texts_validation.txt", "texts_test.txt"):
    for s in _read_lines(os.path.join(corpus_dir, name)):
      lexicon.update(s.split())
  voice, held_out = choose_voice(corpus_dir, voice)
  sets = make_pairs(sentences, lexicon, num_pairs, seed)
  from tqdm import tqdm  # pylint: disable=import-outside-toplevel
  total = sum(len(p) * (3 if name == "cloze" else 2) for name, p in sets.items())
  bar = tqdm(total=total, desc="flite", unit="wav", disable=None)
  for name, pairs in sets.items():
    audio_dir = os.path.join(out_dir, "audio", name)
    os.makedirs(audio_dir, exist_ok=True)
    for p in pairs:
      for role in ("prompt", "positive", "negative"):
        if role in p:
          rel = os.path.join("audio", name, f"{p['id']}_{role[:3]}.wav")
          speak(p[role]["text"], voice, os.path.join(out_dir, rel))
          p[role]["audio"] = rel
          bar.update(1)
    atomic_write(os.path.join(out_dir, f"{name}.jsonl"),
                 "".join(json.dumps(p, sort_keys=True) + "\n" for p in pairs))
  bar.close()
  info = {"corpus_dir": os.path.abspath(corpus_dir), "voice": voice, "voice_held_out": held_out,
          "training_voices": sorted(training_voices(corpus_dir)), "seed": seed,
          "sets": {name: len(p) for name, p in sets.items()}}
  atomic_write(os.path.join(out_dir, "info.json"), json.dumps(info, indent=1) + "\n")
  return info
