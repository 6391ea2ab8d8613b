"""Phone-prompt ablation of TTS: a copy of a flite demo corpus whose words are pronunciations.

  python bench/tts_prompt_corpus.py --corpus data/demo_corpus --out data/demo_corpus_ph

Word i of each transcript becomes its flite pronunciation (each word read alone, as the corpus
builder reads it to time the words) in two-letter phone codes (a one-letter phone doubled): "one small" ->
"wwahnn ssmmaoll". The word timings stay, so every template (whole-sentence and word-interleaved
TTS included) works unchanged. Each row keeps its transcript in `orig_text`; the audio folder and
the pairwise sets are linked, not copied. Train on it with the demo (`python -m
slm_jax.tools.demo --corpus_dir=OUT ...`): every task then reads pronunciations (ASR becomes
phone recognition, the text LM a phone LM); score the TTS with `bench/tts_loopback.py`, which
compares the recognizer's words with `orig_text`.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from slm_jax.data.corpus import flite  # noqa: E402

SPLITS = ("train", "validation", "test", "test_real")


def code(phone: str) -> str:
  """A flite phone's two-letter code: "ah" -> "ah", "n" -> "nn"."""
  return phone * 2 if len(phone) == 1 else phone


def read_rows(corpus: str, split: str) -> list[dict]:
  path = os.path.join(corpus, f"manifest_{split}.jsonl")
  if not os.path.exists(path):
    return []
  with open(path, encoding="utf-8") as f:
    return [json.loads(line) for line in f if line.strip()]


def pronunciation_rows(rows: list[dict], batch: int = 200) -> list[dict]:
  texts = sorted({r["text"] for r in rows})
  words = {}
  for i in range(0, len(texts), batch):
    chunk = texts[i:i + batch]
    for text, res in zip(chunk, flite.batch_pronunciations([t.split() for t in chunk])):
      if not isinstance(res, Exception):
        words[text] = ["".join(code(p) for p in w) for w in res]
  return [dict(r, orig_text=r["text"], words=words[r["text"]], text=" ".join(words[r["text"]]))
          for r in rows if r["text"] in words]


def write_split(out: str, split: str, rows: list[dict]) -> None:
  """The split's manifest and, but for the real recordings, its one-line-per-sentence texts."""
  with open(os.path.join(out, f"manifest_{split}.jsonl"), "w", encoding="utf-8") as f:
    f.writelines(json.dumps(r) + "\n" for r in rows)
  if split != "test_real":   # the tokenizer and the text LM read one line per sentence
    texts = dict((r["orig_text"], r["text"]) for r in rows)
    name = "texts.txt" if split == "train" else f"texts_{split}.txt"
    with open(os.path.join(out, name), "w", encoding="utf-8") as f:
      f.writelines(t + "\n" for t in texts.values())


def link_the_rest(corpus: str, out: str) -> None:
  """build_info.json copied; the audio and the pairwise sets linked."""
  shutil.copy(os.path.join(corpus, "build_info.json"), out)
  for folder in ("audio", "pairwise"):
    if os.path.exists(os.path.join(corpus, folder)) and not os.path.exists(os.path.join(out, folder)):
      os.symlink(os.path.abspath(os.path.join(corpus, folder)), os.path.join(out, folder))


def corpus_args(doc: str, argv=None) -> argparse.Namespace:
  """--corpus (a flite demo corpus) and --out (created), the copy's folder."""
  p = argparse.ArgumentParser(description=doc.split("\n")[0])
  p.add_argument("--corpus", required=True)
  p.add_argument("--out", required=True)
  a = p.parse_args(argv)
  os.makedirs(a.out, exist_ok=True)
  return a


def write_corpus(args: argparse.Namespace, rows_of) -> int:
  """Each split's rows through `rows_of(split, rows) -> rows`, written to args.out; the rest
  linked."""
  for split in SPLITS:
    rows = read_rows(args.corpus, split)
    out = rows_of(split, rows)
    write_split(args.out, split, out)
    print(f"{split}: {len(out)} of {len(rows)} utterances", flush=True)
  link_the_rest(args.corpus, args.out)
  return 0


def main(argv=None) -> int:
  return write_corpus(corpus_args(__doc__, argv), lambda split, rows: pronunciation_rows(rows))


if __name__ == "__main__":
  sys.exit(main())
