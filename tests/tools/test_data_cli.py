"""`slm-data`: every command in one parser, known errors as exit code 2, each command end to end."""
import json
import os
import subprocess
import sys

import pytest
import soundfile as sf

from slm_jax.data import cache
from slm_jax.data.speech import load_speech_tokenizer
from slm_jax.data.synthetic import synthetic_examples, synthetic_speechlike
from slm_jax.tools import cli_errors
from slm_jax.tools import data as data_cli
from slm_jax.unified_vocab import UnifiedVocab

COMMANDS = ("build-demo", "train-spm", "fit-kmeans", "cache", "inspect")


def test_help_lists_every_command(capsys):
  with pytest.raises(SystemExit) as e:
    data_cli.main(["--help"])
  assert e.value.code == 0
  out = capsys.readouterr().out
  for command in COMMANDS:
    assert command in out


def test_no_command_prints_help(capsys):
  assert data_cli.main([]) == 2
  assert "build-demo" in capsys.readouterr().out


def test_build_demo_subprocess(tmp_path, repo_root):
  out = tmp_path / "demo"
  env = dict(os.environ, JAX_PLATFORMS="cpu", TF_CPP_MIN_LOG_LEVEL="3")
  cmd = [sys.executable, "-m", "slm_jax.tools.data",
         "--gin_param", "build_demo_corpus.split_fractions = (1.0, 0.0, 0.0)",
         "build-demo", "--out", str(out), "--max_sentences", "2", "--voices_per_sentence", "1",
         "--voices", "flite:rms", "--workers", "1", "--no_real", "--quiet"]
  proc = subprocess.run(cmd, cwd=repo_root, env=env, capture_output=True, text=True,
                        timeout=300, check=False)
  assert proc.returncode == 0, proc.stderr[-2000:]
  assert "demo corpus in" in proc.stdout
  with open(out / "build_info.json") as f:
    info = json.load(f)
  assert info["splits"]["train"]["utterances"] == 2  # gin put every sentence in train
  assert info["speakers"] == {"flite-rms": 2} and "test_real" not in info["splits"]
  assert len(list((out / "audio" / "train").glob("*.wav"))) == 2


def test_build_demo_bad_voice_is_a_clear_error(tmp_path, capsys):
  code = cli_errors.run_main("slm-data", lambda: data_cli.main(
      ["build-demo", "--out", str(tmp_path / "x"), "--voices", "flite:kal"]))
  assert code == 2
  assert "slm-data: error: bad voice spec 'flite:kal'" in capsys.readouterr().err
  assert not (tmp_path / "x").exists()


def test_gin_typo_is_a_clear_error(tmp_path, capsys):
  code = cli_errors.run_main("slm-data", lambda: data_cli.main(
      ["--gin_param", "fit_kmeans_tokenizer.no_such_option = 1", "fit-kmeans",
       "--audio_glob", str(tmp_path / "*.wav"), "--out", str(tmp_path / "km")]))
  assert code == 2 and "no_such_option" in capsys.readouterr().err


def test_train_spm(tmp_path, capsys):
  words = ("alpha beta gamma delta epsilon zeta eta theta iota kappa lambda mu nu xi omicron pi "
           "rho sigma tau upsilon phi chi psi omega").split()
  lines = [" ".join(words[(i * 7 + j) % len(words)] for j in range(3 + i % 5)) for i in range(400)]
  (tmp_path / "c.txt").write_text("\n".join(lines) + "\n")
  assert data_cli.main(["train-spm", "--input", str(tmp_path / "c.txt"), "--vocab_size", "40",
                        "--out", str(tmp_path / "m")]) == 0
  assert sorted(os.listdir(tmp_path)) == ["c.txt", "m.model", "m.vocab"]  # no temporaries left
  assert "sentencepiece:" in capsys.readouterr().out


def test_fit_kmeans_skips_and_counts_bad_files_and_takes_gin_bindings(tmp_path, capsys):
  for i in range(6):
    sf.write(str(tmp_path / f"u{i}.wav"), synthetic_speechlike(1.0 + 0.1 * i, 16000, seed=i), 16000)
  (tmp_path / "broken.wav").write_bytes(b"junk")
  out = tmp_path / "km"
  assert data_cli.main(["--gin_param", "fit_kmeans_tokenizer.num_iters = 2", "fit-kmeans",
                        "--audio_glob", str(tmp_path / "*.wav"), "--num_units", "16",
                        "--rate", "25", "--out", str(out)]) == 0
  printed = capsys.readouterr().out
  assert "6 ok, 1 skipped" in printed
  assert "of at most 2 iterations" in printed   # the gin binding reached the fit
  tok = load_speech_tokenizer(str(out))
  assert tok.codebook_sizes == (16,) and tok.name in printed


def test_inspect_prints_packed_rows_by_modality(tmp_path, capsys):
  vocab = UnifiedVocab(text_size=100, speech_codebook_sizes=(64, 16))
  cache.write_cache(synthetic_examples(vocab, 12, mean_len=20), str(tmp_path / "c"), vocab,
                    task="t", progress=False)
  assert data_cli.main(["inspect", "--cache", str(tmp_path / "c"), "--seq_len", "64"]) == 0
  out = capsys.readouterr().out
  assert '"num_examples": 12' in out and "row 1:" in out
  assert "*speech[" in out or "*text[" in out
