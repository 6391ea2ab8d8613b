"""slm-generate end to end on a tiny exported model: every task, a batch file, clean errors."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest
import soundfile as sf

from slm_jax.data.speech.dmel import DMelTokenizer
from slm_jax.data.text.byte_vocab import ByteVocab
from slm_jax.export import inference_checkpoint
from slm_jax.tools import cli_errors, generate

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "export"))
import inference_testing  # noqa: E402  pylint: disable=wrong-import-position


@pytest.fixture(scope="module")
def export_dir(tmp_path_factory):
  """A tiny model over bytes + dMel (tokenizers without files), trained 2 steps, exported."""
  root = tmp_path_factory.mktemp("gen")
  text, speech = ByteVocab(), DMelTokenizer()
  overrides = [
      f"UnifiedVocab.text_size={text.size}",
      f"UnifiedVocab.speech_codebook_sizes={tuple(speech.codebook_sizes)}",
      f"UnifiedVocab.text_vocab_name='{text.name}'",
      f"UnifiedVocab.speech_tokenizer_name='{speech.name}'",
  ]
  old = list(inference_testing.TINY)
  inference_testing.TINY[:] = [t for t in old if not t.startswith("UnifiedVocab.")] + overrides
  try:
    inference_testing.train_workdir(str(root / "run"), steps=2, mesh_shape={"fsdp": 1})
  finally:
    inference_testing.TINY[:] = old
  out = str(root / "export")
  inference_checkpoint.export_inference_checkpoint(str(root / "run"), out)
  wav = str(root / "tone.wav")
  t = np.arange(8000) / 16000
  sf.write(wav, (0.3 * np.sin(2 * np.pi * 220 * t)).astype(np.float32), 16000)
  sf.write(str(root / "tone8k.wav"), (0.3 * np.sin(2 * np.pi * 220 * t[:4000])).astype(np.float32),
           8000)
  open(root / "empty.wav", "wb").close()
  return out, root


def _gen(argv, capsys):
  code = generate.main(argv)
  return code, capsys.readouterr().out


def test_every_task(export_dir, capsys, tmp_path):
  out, root = export_dir
  base = ["--checkpoint", out, "--max_new_tokens", "6", "--max_length", "128"]
  code, text = _gen(base + ["--task", "asr", "--audio", str(root / "tone.wav")], capsys)
  assert code == 0 and text.strip() != ""          # an (untrained) transcript, printed
  wav = str(tmp_path / "tts.wav")
  code, text = _gen(base + ["--task", "tts", "--text", "Hello there!", "--out", wav,
                            "--ignore_eos"], capsys)
  audio, rate = sf.read(wav)
  assert code == 0 and rate == 16000 and audio.size > 0 and "wrote" in text
  code, _ = _gen(base + ["--task", "continue", "--audio", str(root / "tone8k.wav")], capsys)
  assert code == 0                                   # 8 kHz input: resampled, not refused
  code, _ = _gen(base + ["--task", "chat", "--text", "Say this: hi"], capsys)
  assert code == 0


def test_stream_prints_text_and_writes_audio_in_chunks(export_dir, capsys, tmp_path):
  out, root = export_dir
  base = ["--checkpoint", out, "--max_length", "128", "--stream"]
  code, streamed = _gen(base + ["--task", "continue", "--text", "ab", "--max_new_tokens", "8"],
                        capsys)
  code2, whole = _gen(base[:-1] + ["--task", "continue", "--text", "ab", "--max_new_tokens", "8"],
                      capsys)
  assert code == code2 == 0 and streamed.strip() == whole.strip()   # greedy: the same answer
  wav = str(tmp_path / "s.wav")
  code, text = _gen(base + ["--task", "tts", "--text", "hi", "--max_new_tokens", "100",
                            "--out", wav, "--ignore_eos"], capsys)
  audio, _ = sf.read(wav)
  assert code == 0 and audio.size > 0 and not os.path.exists(wav + ".partial.wav")


def test_batch_file_runs_through_the_slots(export_dir, capsys, tmp_path):
  out, root = export_dir
  batch = tmp_path / "reqs.jsonl"
  lines = [{"task": "asr", "audio": str(root / "tone.wav")},
           {"task": "tts", "text": "one two"},
           {"task": "continue", "text": "abc"}]
  batch.write_text("\n".join(json.dumps(x) for x in lines) + "\n")
  code, text = _gen(["--checkpoint", out, "--batch_file", str(batch), "--slots", "2",
                     "--max_new_tokens", "5", "--max_length", "128", "--out_dir", str(tmp_path)],
                    capsys)
  results = [json.loads(x) for x in text.strip().splitlines()]
  assert code == 0 and [r["index"] for r in results] == [0, 1, 2]
  assert all(1 <= r["new_tokens"] <= 5 for r in results)
  assert [r["task"] for r in results] == ["asr", "tts", "continue"]


def test_word_tts_mode_speaks_word_by_word_beside_engine_requests(export_dir, capsys, tmp_path):
  """--tts_mode words: TTS requests go through word injection (word_tts), the others through the
  engine, and the results keep the requests' order; the single-request form writes its wav."""
  out, root = export_dir
  base = ["--checkpoint", out, "--max_length", "128", "--tts_mode", "words",
          "--max_positions_per_word", "3"]
  wav = str(tmp_path / "w.wav")
  code, text = _gen(base + ["--task", "tts", "--text", "one two three", "--out", wav,
                            "--max_new_tokens", "20"], capsys)
  audio, rate = sf.read(wav)
  assert code == 0 and rate == 16000 and audio.size > 0 and "wrote" in text
  batch = tmp_path / "reqs.jsonl"
  lines = [{"task": "continue", "text": "abc"}, {"task": "tts", "text": "one two three"},
           {"task": "asr", "audio": str(root / "tone.wav")}]
  batch.write_text("\n".join(json.dumps(x) for x in lines) + "\n")
  code, text = _gen(base + ["--batch_file", str(batch), "--max_new_tokens", "5",
                            "--out_dir", str(tmp_path)], capsys)
  results = [json.loads(x) for x in text.strip().splitlines()]
  assert code == 0 and [r["task"] for r in results] == ["continue", "tts", "asr"]
  tts = results[1]
  assert tts["tts_mode"] == "words" and tts["words"] == 3
  assert tts.get("speech_frames", 0) <= 5          # the answer's budget holds across words
  assert "tts_mode" not in results[0] and 1 <= results[0]["new_tokens"] <= 5


@pytest.mark.parametrize("extra, message", [
    (["--task", "tts", "--text", "hi", "--tts_mode", "words", "--temperature", "0.7"],
     "greedily"),
    (["--task", "tts", "--text", "hi", "--tts_mode", "words", "--stream"], "does not stream"),
    (["--task", "asr", "--audio", "EMPTY"], "empty"),
    (["--task", "asr", "--audio", "/no/such.wav"], "does not exist"),
    (["--task", "tts", "--text", "   "], "non-empty"),
    (["--task", "continue", "--text", "x" * 300], "max_length"),
])
def test_known_errors_exit_2_without_traceback(export_dir, extra, message, capsys):
  """In-process through the same run_main the console script uses (the subprocess test below
  checks the real entry point once)."""
  out, root = export_dir
  extra = [str(root / "empty.wav") if e == "EMPTY" else e for e in extra]
  argv = ["--checkpoint", out, "--max_length", "64", "--max_new_tokens", "2"] + extra
  code = cli_errors.run_main(generate.PROG, lambda: generate.main(argv))
  err = capsys.readouterr().err
  assert code == 2 and "Traceback" not in err and message in err
  assert err.strip().splitlines()[-1].startswith("slm-generate: error:")


def test_missing_checkpoint_is_a_clear_error(tmp_path):
  proc = subprocess.run([sys.executable, "-m", "slm_jax.tools.generate", "--checkpoint",
                         str(tmp_path / "nope"), "--task", "tts", "--text", "hi"],
                        capture_output=True, text=True, timeout=300)
  assert proc.returncode == 2 and "Traceback" not in proc.stderr
  assert "slm-export" in proc.stderr
