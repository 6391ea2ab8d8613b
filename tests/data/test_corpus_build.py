"""build-demo end to end on a tiny corpus: layout, contract fields, splits, determinism, resume."""
import json
import os

import numpy as np
import pytest
import soundfile as sf

from slm_jax.data.corpus import build, manifest

TINY = dict(max_sentences=6, voices_per_sentence=2, seed=3, workers=1, progress=False,
            voices=("flite:slt", "espeak:en-us+f3:150:60"), split_fractions=(0.4, 0.3, 0.3))
CONTRACT = {"id", "text", "words", "word_starts", "word_ends", "audio_path", "sample_rate",
            "speaker", "split"}


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
  out = str(tmp_path_factory.mktemp("demo"))
  info = build.build_demo_corpus(out, **TINY)
  return out, info


def _manifests(out, splits=manifest.SPLITS):
  return {s: manifest.read_manifest(out, s) for s in splits}


def test_layout_and_counts(tiny):
  out, info = tiny
  for name in ["texts.txt", "build_info.json"] + [f"manifest_{s}.jsonl" for s in manifest.SPLITS]:
    assert os.path.exists(os.path.join(out, name)), name
  m = _manifests(out)
  synthetic = [r for s in build.SYNTH_SPLITS for r in m[s]]
  assert info["sentences_used"] == 6
  assert len(synthetic) == 12 - sum(info["failures"].values()) >= 10
  assert len(m["test_real"]) == 10
  with open(os.path.join(out, "build_info.json")) as f:
    saved = json.load(f)
  assert saved["utterances"] == len(synthetic) + 10
  assert saved["hours"] == pytest.approx(
      sum(r["duration"] for rs in m.values() for r in rs) / 3600, abs=1e-3)
  assert set(saved["speakers"]) >= {"flite-slt", "espeak-en-us+f3-r150-p60", "librivox-austen"}


def test_utterances_follow_the_data_contract(tiny):
  out, _ = tiny
  for split, records in _manifests(out).items():
    for r in records:
      assert CONTRACT <= set(r) and r["split"] == split
      assert r["words"] == r["text"].split()
      audio, rate = sf.read(os.path.join(out, r["audio_path"]), dtype="int16")
      info = sf.info(os.path.join(out, r["audio_path"]))
      assert rate == 16000 and audio.ndim == 1 and info.subtype == "PCM_16"
      assert r["audio_path"] == f"audio/{split}/{r['id']}.wav"
      duration = len(audio) / 16000
      assert r["duration"] == pytest.approx(duration, abs=1e-3)
      if split == "test_real":
        assert r["word_starts"] == r["word_ends"] == []
        continue
      starts, ends = np.asarray(r["word_starts"]), np.asarray(r["word_ends"])
      assert len(starts) == len(ends) == len(r["words"])
      assert np.all(starts < ends) and np.all(ends[:-1] <= starts[1:] + 1e-6)
      assert starts[0] >= 0 and ends[-1] <= duration + 1e-3


def test_splits_are_by_sentence_and_texts_hold_train_only(tiny):
  out, _ = tiny
  m = _manifests(out)
  texts = {s: {r["text"] for r in m[s]} for s in build.SYNTH_SPLITS}
  assert sum(len(t) > 0 for t in texts.values()) >= 2  # the fractions spread 6 sentences
  for a in build.SYNTH_SPLITS:
    for b in build.SYNTH_SPLITS:
      if a < b:
        assert not texts[a] & texts[b], (a, b)
    for t in texts[a]:
      assert build.split_of(t, TINY["split_fractions"]) == a
  with open(os.path.join(out, "texts.txt")) as f:
    train_texts = set(f.read().splitlines())
  assert texts["train"] <= train_texts
  assert not train_texts & (texts["validation"] | texts["test"])


def test_same_seed_same_corpus_and_rebuild_is_idempotent(tiny, tmp_path):
  out, _ = tiny
  first = _manifests(out)
  wavs = {r["audio_path"]: os.path.getmtime(os.path.join(out, r["audio_path"]))
          for rs in first.values() for r in rs}
  removed = first["train"][0]["audio_path"] if first["train"] else first["test"][0]["audio_path"]
  with open(os.path.join(out, removed), "rb") as f:
    removed_bytes = f.read()
  os.unlink(os.path.join(out, removed))
  build.build_demo_corpus(out, **TINY)  # resumes: only the missing wav is made again
  assert _manifests(out) == first
  with open(os.path.join(out, removed), "rb") as f:
    assert f.read() == removed_bytes
  for path, mtime in wavs.items():
    if path != removed:
      assert os.path.getmtime(os.path.join(out, path)) == mtime, path
  leftovers = [n for _, _, names in os.walk(out) for n in names if n.startswith(".tmp-")]
  assert not leftovers
  # A fresh folder with the same seed gives the same corpus.
  other = str(tmp_path / "again")
  build.build_demo_corpus(other, **{**TINY, "include_real": False})
  assert not os.path.exists(manifest.manifest_path(other, "test_real"))
  assert _manifests(other, build.SYNTH_SPLITS) == {s: first[s] for s in build.SYNTH_SPLITS}


def test_another_seed_picks_other_sentences(tiny, tmp_path):
  out, _ = tiny
  texts = {r["text"] for s in build.SYNTH_SPLITS for r in manifest.read_manifest(out, s)}
  other = str(tmp_path / "seed4")
  build.build_demo_corpus(other, **{**TINY, "seed": 4, "max_sentences": 2, "include_real": False,
                                    "voices": ("flite:kal16",), "voices_per_sentence": 1})
  texts4 = {r["text"] for s in build.SYNTH_SPLITS for r in manifest.read_manifest(other, s)}
  assert len(texts4) == 2 and texts4 - texts


def test_iter_utterances_loads_audio(tiny):
  out, _ = tiny
  utt = next(manifest.iter_utterances(out, "test_real"))
  assert utt["audio"].dtype == np.int16 and utt["audio"].shape[0] > 8000
  with pytest.raises(FileNotFoundError, match="build-demo"):
    manifest.read_manifest(out + "-missing", "train")


def test_build_demo_without_gin_bindings_imports_neither_jax_nor_tensorflow(tmp_path):
  """`make demo` runs the corpus stage while pip installs the rest: `slm-data build-demo` must run
  on requirements-corpus.txt's packages alone (and the demo's `--corpus_only` on top of it)."""
  import subprocess  # pylint: disable=import-outside-toplevel
  import sys  # pylint: disable=import-outside-toplevel
  out = tmp_path / "corpus"
  code = ("import sys\n"
          "from slm_jax.tools import data\n"
          f"assert data.main(['build-demo', '--out', {str(out)!r}, '--max_sentences', '3', "
          "'--voices_per_sentence', '1', '--voices', 'flite:kal16', '--quiet']) == 0\n"
          "heavy = sorted(m for m in ('jax', 'tensorflow', 'seqio', 'flax') if m in sys.modules)\n"
          "print('HEAVY', heavy)\n")
  proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False,
                        cwd=os.path.dirname(os.path.dirname(os.path.dirname(__file__))))
  assert proc.returncode == 0, proc.stderr[-2000:]
  assert "HEAVY []" in proc.stdout, proc.stdout[-2000:]
  assert json.loads((out / "build_info.json").read_text())["sentences_used"] == 3


def test_the_demos_corpus_only_stage_stops_after_the_corpus(tmp_path, capsys):
  from slm_jax.tools import demo  # pylint: disable=import-outside-toplevel
  corpus = tmp_path / "corpus"
  corpus.mkdir()
  (corpus / "build_info.json").write_text(json.dumps({"max_sentences": 4500,
                                                      "voices_per_sentence": 1}))
  assert demo.main(["--corpus_only", "--corpus_dir", str(corpus),
                    "--workdir", str(tmp_path / "run")]) == 0
  out = capsys.readouterr().out
  assert "corpus present" in out and "== demo: corpus done" in out and "tokenizers" not in out
  assert sorted(os.listdir(corpus)) == ["build_info.json"] and not (tmp_path / "run").exists()
