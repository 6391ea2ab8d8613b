"""bench/tts_prompt_corpus.py (the phone-prompt ablation's corpus) and bench/tts_loopback.py's
sentence selection."""
import importlib.util
import json
import os

import pytest


def _load(repo_root, name):
  spec = importlib.util.spec_from_file_location(f"bench_{name}",
                                                os.path.join(repo_root, "bench", f"{name}.py"))
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


def _write(path, rows):
  with open(path, "w", encoding="utf-8") as f:
    f.writelines(json.dumps(r) + "\n" for r in rows)


def test_pronunciation_corpus_keeps_words_timings_and_transcripts(repo_root, tmp_path):
  bench = _load(repo_root, "tts_prompt_corpus")
  src, out = tmp_path / "corpus", tmp_path / "out"
  src.mkdir()
  (src / "audio").mkdir()
  rows = [{"id": "a", "text": "one small step", "words": ["one", "small", "step"],
           "word_starts": [0.1, 0.4, 0.8], "word_ends": [0.4, 0.8, 1.2], "speaker": "flite-slt"},
          {"id": "b", "text": "the cat", "words": ["the", "cat"], "word_starts": [0.1, 0.3],
           "word_ends": [0.3, 0.7], "speaker": "flite-awb"},
          {"id": "c", "text": "the cat", "words": ["the", "cat"], "word_starts": [0.2, 0.4],
           "word_ends": [0.4, 0.8], "speaker": "flite-rms"}]
  _write(src / "manifest_train.jsonl", rows)
  (src / "build_info.json").write_text("{}")
  assert bench.main(["--corpus", str(src), "--out", str(out)]) == 0
  got = [json.loads(line) for line in (out / "manifest_train.jsonl").read_text().splitlines()]
  assert got[0]["words"] == ["wwahnn", "ssmmaoll", "ssttehpp"]   # flite's cmu lexicon
  assert got[0]["text"] == "wwahnn ssmmaoll ssttehpp" and got[0]["orig_text"] == "one small step"
  assert got[0]["word_starts"] == rows[0]["word_starts"] and got[2]["words"] == got[1]["words"]
  # One line per sentence for the tokenizer and the text LM; the audio is linked, not copied.
  assert (out / "texts.txt").read_text().splitlines() == [got[0]["text"], got[1]["text"]]
  assert os.path.islink(out / "audio")
  assert not (out / "manifest_test.jsonl").read_text()   # a split the corpus lacks: empty


def test_loopback_reads_the_first_distinct_sentences(repo_root, tmp_path):
  bench = _load(repo_root, "tts_loopback")
  _write(tmp_path / "m.jsonl", [{"text": t} for t in ("a b", "a b", "c", "d e", "f")])
  assert [r["text"] for r in bench.distinct_rows(str(tmp_path / "m.jsonl"), 3)] == ["a b", "c", "d e"]


def test_phone_codes_are_two_letters(repo_root):
  bench = _load(repo_root, "tts_prompt_corpus")
  assert [bench.code(p) for p in ("ah", "n", "ng")] == ["ah", "nn", "ng"]
  with pytest.raises(SystemExit):
    bench.main(["--corpus"])   # argparse: a clear usage error
