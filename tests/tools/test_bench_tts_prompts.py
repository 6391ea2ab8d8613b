"""bench/tts_prompt_corpus.py and bench/tts_phone_corpus.py (the phone-prompt and
phone-interleaving ablations' corpora) and bench/tts_loopback.py's sentence selection."""
import json
import os
import shutil

import pytest


def _write(path, rows):
  with open(path, "w", encoding="utf-8") as f:
    f.writelines(json.dumps(r) + "\n" for r in rows)


def test_pronunciation_corpus_keeps_words_timings_and_transcripts(load_bench, tmp_path):
  bench = load_bench("tts_prompt_corpus")
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


def test_loopback_reads_the_first_distinct_sentences(load_bench, tmp_path):
  bench = load_bench("tts_loopback")
  _write(tmp_path / "m.jsonl", [{"text": t} for t in ("a b", "a b", "c", "d e", "f")])
  assert [r["text"] for r in bench.distinct_rows(str(tmp_path / "m.jsonl"), 3)] == ["a b", "c", "d e"]


def test_phone_codes_are_two_letters(load_bench):
  bench = load_bench("tts_prompt_corpus")
  assert [bench.code(p) for p in ("ah", "n", "ng")] == ["ah", "nn", "ng"]
  with pytest.raises(SystemExit):
    bench.main(["--corpus"])   # argparse: a clear usage error


@pytest.mark.skipif(not shutil.which("flite") or not os.path.isdir("/usr/share/games/fortunes"),
                    reason="needs Debian's flite and fortunes (make apt)")
def test_phone_corpus_times_every_spoken_phone(load_bench, tmp_path):
  from slm_jax.data.corpus import flite, fortunes  # pylint: disable=import-outside-toplevel
  from slm_jax.data.transcript import normalize_transcript  # pylint: disable=import-outside-toplevel
  bench = load_bench("tts_phone_corpus")
  for sentence in fortunes.fortune_sentences()[:20]:   # the first that flite reads word for word
    text = normalize_transcript(sentence)
    try:
      audio, starts, ends = flite.synthesize(sentence, text.split(), "slt")
      break
    except ValueError:
      continue
  src, out = tmp_path / "corpus", tmp_path / "out"
  (src / "audio").mkdir(parents=True)
  row = {"id": "a", "text": text, "words": text.split(), "word_starts": starts, "word_ends": ends,
         "speaker": "flite-slt", "duration": len(audio) / 16000, "audio_path": "audio/a.wav"}
  _write(src / "manifest_train.jsonl", [row, dict(row, id="b", duration=row["duration"] + 1.0)])
  _write(src / "manifest_test_real.jsonl", [{"id": "r", "text": "ten of clubs", "duration": 1.0,
                                             "speaker": "cmu-cards", "audio_path": "audio/r.wav"}])
  (src / "build_info.json").write_text("{}")
  assert bench.main(["--corpus", str(src), "--out", str(out)]) == 0
  got = [json.loads(line) for line in (out / "manifest_train.jsonl").read_text().splitlines()]
  assert [r["id"] for r in got] == ["a"]        # b's audio is not what flite says: dropped
  phones, s, e = got[0]["words"], got[0]["word_starts"], got[0]["word_ends"]
  assert got[0]["orig_text"] == text and got[0]["text"] == " ".join(phones)
  assert len(phones) > len(text.split()) and all(len(p) == 2 for p in phones)
  assert all(a < b for a, b in zip(s, e)) and all(b <= a for b, a in zip(e, s[1:]))
  # The words' own timings span their phones: the first and last agree with them.
  assert abs(s[0] - starts[0]) < 1e-3 and abs(e[-1] - ends[-1]) < 1e-3
  real = json.loads((out / "manifest_test_real.jsonl").read_text())
  assert real["text"].split()[:3] == ["tt", "eh", "nn"] and real["orig_text"] == "ten of clubs"
  assert "words" not in real and "word_starts" not in real
