"""slm-eval end to end on a tiny checkpoint trained in the test, its known errors, and the
periodic evaluations inside training."""
import json
import os
import shutil
import subprocess
import sys

import gin
import numpy as np
import pytest
import soundfile as sf

from slm_jax import configuration
from slm_jax.data.cache import directory as cache_lib
from slm_jax.data.speech.dmel import DMelTokenizer
from slm_jax.data.synthetic import synthetic_examples
from slm_jax.data.text.byte_vocab import ByteVocab
from slm_jax.export import inference_checkpoint
from slm_jax.tools import cli_errors, evaluate, plot_metrics
from slm_jax.train import loop
from slm_jax.unified_vocab import UnifiedVocab, VocabMismatchError

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "export"))
import inference_testing  # noqa: E402  pylint: disable=wrong-import-position

SENTENCES = ["the cat sat on the mat", "a dog ran in the park today",
             "never put off until tomorrow what you can do", "birds sing in the early morning"]
HAVE_FLITE = shutil.which("flite") is not None


def _vocab_overrides():
  text, speech = ByteVocab(), DMelTokenizer()
  return [f"UnifiedVocab.text_size={text.size}",
          f"UnifiedVocab.speech_codebook_sizes={tuple(speech.codebook_sizes)}",
          f"UnifiedVocab.text_vocab_name='{text.name}'",
          f"UnifiedVocab.speech_tokenizer_name='{speech.name}'"]


def _speak(text, path, voice="slt"):
  if HAVE_FLITE:
    from slm_jax.evaluation.pairwise_sets import speak  # pylint: disable=import-outside-toplevel
    return speak(text, voice, path)
  t = np.arange(8000 + 800 * len(text.split())) / 16000      # no flite: a tone per sentence
  sf.write(path, (0.3 * np.sin(2 * np.pi * (200 + 10 * len(text)) * t)).astype(np.float32), 16000)
  return path


def make_corpus(root) -> str:
  """A miniature corpus folder: test manifest (two voices), texts, build_info."""
  corpus = root / "corpus"
  (corpus / "audio").mkdir(parents=True)
  lines = []
  for i, s in enumerate(SENTENCES):
    for voice in ("slt", "rms"):
      rel = f"audio/{i}-{voice}.wav"
      _speak(s, str(corpus / rel), voice)
      lines.append(json.dumps({"audio_path": rel, "text": s, "speaker": f"flite-{voice}",
                               "id": f"{i}-{voice}"}))
  (corpus / "manifest_test.jsonl").write_text("\n".join(lines) + "\n")
  (corpus / "texts_test.txt").write_text("\n".join(SENTENCES) + "\n")
  (corpus / "texts.txt").write_text("the cat\n")
  (corpus / "build_info.json").write_text(json.dumps({"voices": ["flite:slt@1", "flite:rms@1"]}))
  return str(corpus)


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
  """A tiny bytes + dMel model trained 2 steps and exported; a corpus; a loss cache."""
  root = tmp_path_factory.mktemp("eval")
  old = list(inference_testing.TINY)
  inference_testing.TINY[:] = [t for t in old if not t.startswith("UnifiedVocab.")]
  inference_testing.TINY += _vocab_overrides()
  try:
    cfg, _, _ = inference_testing.train_workdir(str(root / "run"), steps=2, mesh_shape={"fsdp": 1})
  finally:
    inference_testing.TINY[:] = old
  export = str(root / "export")
  inference_checkpoint.export_inference_checkpoint(str(root / "run"), export)
  cache_lib.write_cache(synthetic_examples(cfg.vocab, 6, mean_len=40, max_len=120),
                        str(root / "cache" / "validation" / "synthetic_task"), cfg.vocab,
                        task="synthetic_task", split="validation", progress=False)
  return export, make_corpus(root), str(root / "cache"), root


@pytest.mark.slow
def test_slm_eval_end_to_end(setup, tmp_path, capsys):
  export, corpus, cache, _ = setup
  pairs = str(tmp_path / "pairwise")
  if HAVE_FLITE:
    assert evaluate.main(["build-pairwise", "--corpus_dir", corpus, "--out", pairs,
                          "--num_pairs", "3"]) == 0
  out = str(tmp_path / "results.json")
  argv = ["--checkpoint", export, "--asr_manifest", f"test={corpus}/manifest_test.jsonl",
          "--speakers", "flite", "--tts_manifest", f"{corpus}/manifest_test.jsonl",
          "--max_examples", "4", "--max_new_tokens", "6", "--tts_max_new_tokens", "24",
          "--loss_cache", cache, "--seq_len", "128", "--batch_size", "4", "--slots", "3",
          "--out", out, "--tensorboard", str(tmp_path / "tb"), "--no_progress"]
  if HAVE_FLITE:
    argv += ["--pairwise_dir", pairs]
  assert evaluate.main(argv) == 0
  printed = capsys.readouterr().out
  results = json.load(open(out))
  asr = results["asr"]["test"]
  assert asr["utterances"] == 4 and 0 <= asr["cer"] and asr["baseline"]["empty_cer"] == 1.0
  assert "deranged_cer" in asr["baseline"] and set(asr["per_speaker"]) == {"flite-rms", "flite-slt"}
  assert asr["examples"][0]["reference"] == SENTENCES[0]
  loss = results["loss"]["synthetic_task"]
  assert loss["perplexity"] == pytest.approx(np.exp(loss["loss/ce"]), rel=1e-6)
  tts = results["tts"]["test"]
  assert len(tts["files"]) >= 1 and all(os.path.exists(f) for f in tts["files"])
  if "skipped" not in tts:
    assert tts["wer"] >= 0 and "resynthesis" in tts and "original" in tts
  if HAVE_FLITE:
    assert set(results["pairwise"]) == {"words", "syntax", "cloze"}
    assert set(results["pairwise"]["cloze"]) == {"speech", "text", "text_to_speech",
                                                 "speech_to_text"}
    assert all(0 <= r["accuracy"] <= 1 for r in results["pairwise"]["words"].values())
  assert "ASR" in printed and "Loss" in printed and "TTS loopback" in printed
  tags = plot_metrics.read_scalars(str(tmp_path / "tb"))
  assert "eval/asr/test/cer" in tags and "eval/loss/synthetic_task/loss/ce" in tags
  # Each part's wall time, named like its section (not a TensorBoard scalar).
  expected = {"loss", "asr/test", "tts"} | ({"pairwise/cloze"} if HAVE_FLITE else set())
  assert expected <= set(results["seconds"]) and all(v >= 0 for v in results["seconds"].values())
  assert not any(t.startswith("eval/seconds") for t in tags)


@pytest.mark.parametrize("argv, message", [
    (["--asr_manifest", "/no/such.jsonl"], "does not exist"),
    ([], "nothing to evaluate"),
    (["--asr_manifest", "BAD"], "not JSON"),
    (["--pairwise_dir", "/no/such/dir"], "does not exist"),
    (["--tts_texts", "EMPTY"], "no sentences"),
])
def test_known_errors_exit_2_with_one_line(tmp_path, argv, message, capsys):
  """Inputs are checked before the model loads: no checkpoint is needed to see these errors."""
  export = str(tmp_path / "not_loaded")
  bad = tmp_path / "bad.jsonl"
  bad.write_text("{not json\n")
  empty = tmp_path / "empty.txt"
  empty.write_text("\n")
  argv = [str(bad) if a == "BAD" else str(empty) if a == "EMPTY" else a for a in argv]
  code = cli_errors.run_main(evaluate.PROG, lambda: evaluate.main(["--checkpoint", export] + argv))
  err = capsys.readouterr().err
  assert code == 2 and "Traceback" not in err and message in err
  assert err.strip().splitlines()[-1].startswith("slm-eval: error:")


def test_missing_checkpoint_exits_2(tmp_path):
  (tmp_path / "m.jsonl").write_text('{"audio_path": "a.wav", "text": "hi"}\n')
  proc = subprocess.run([sys.executable, "-m", "slm_jax.tools.evaluate", "--checkpoint",
                         str(tmp_path / "nope"), "--asr_manifest", str(tmp_path / "m.jsonl")],
                        capture_output=True, text=True, timeout=300)
  assert proc.returncode == 2 and "slm-eval: error:" in proc.stderr
  assert "nope" in proc.stderr and "Traceback" not in proc.stderr


@pytest.mark.slow
def test_periodic_evaluations_write_curves_during_training(setup, tmp_path):
  _, corpus, _, _ = setup
  pairs = tmp_path / "pairs"
  pairs.mkdir()
  (pairs / "toy.jsonl").write_text(json.dumps({
      "id": "0", "prompt": {"text": "the cat", "audio": f"{corpus}/audio/0-slt.wav"},
      "positive": {"text": "sat on the mat", "audio": f"{corpus}/audio/0-rms.wav"},
      "negative": {"text": "mat the on sat", "audio": f"{corpus}/audio/1-rms.wav"}}) + "\n")
  params = [p for p in inference_testing.TINY if not p.startswith("UnifiedVocab.")]
  params += _vocab_overrides() + [
      "TOTAL_STEPS=4", "BATCH_SIZE=8", "SEQ_LEN=32", "make_mesh.ici_shape={'fsdp': -1}",
      "import slm_jax.evaluation.periodic",
      "train.periodic_evals=[@asr_eval_hook(), @pairwise_eval_hook()]",
      "train.periodic_eval_every=2",
      f"asr_eval_hook.manifest='{corpus}/manifest_test.jsonl'", "asr_eval_hook.max_examples=2",
      "asr_eval_hook.max_new_tokens=4", f"pairwise_eval_hook.pairwise_dir='{pairs}'",
      "get_text_vocabulary.kind='bytes'", "get_speech_tokenizer.kind='dmel'",
      "eval_tokenizers.text_vocab=@get_text_vocabulary()",
      "eval_tokenizers.speech_tokenizer=@get_speech_tokenizer()",
  ]
  configuration.parse(["models/tiny.gin", "runs/pretrain.gin"], params, finalize=False)
  result = loop.train(str(tmp_path / "run"), progress=False)
  periodic = result["periodic_eval"]
  assert [p["step"] for p in periodic] == [2, 4]
  assert all(0 <= p["asr/test/cer"] for p in periodic)
  assert {"pairwise/toy/speech/accuracy", "pairwise/toy/text_to_speech/accuracy"} <= set(periodic[0])
  tags = plot_metrics.read_scalars(str(tmp_path / "run" / "tensorboard"))
  assert [s for s, _ in tags["eval/asr/test/cer"]] == [2, 4]
  assert "eval/pairwise/toy/text/accuracy" in tags
  # The hooks only read the live parameters: the same run without them trains identically.
  gin.clear_config()
  configuration.parse(["models/tiny.gin", "runs/pretrain.gin"],
                      params + ["train.periodic_evals=[]"], finalize=False)
  plain = loop.train(str(tmp_path / "plain"), progress=False)
  assert [h["loss"] for h in plain["history"]] == [h["loss"] for h in result["history"]]


def test_a_periodic_evaluations_tokenizer_that_does_not_fit_fails_before_the_first_step(
    setup, tmp_path):
  _, corpus, _, _ = setup
  other_dmel = tmp_path / "dmel8"     # the hooks' dMel: 8 levels where the run's has 16
  DMelTokenizer(num_levels=8).save(str(other_dmel))
  params = [p for p in inference_testing.TINY if not p.startswith("UnifiedVocab.")]
  params += _vocab_overrides() + [
      "TOTAL_STEPS=4", "BATCH_SIZE=8", "SEQ_LEN=32", "make_mesh.ici_shape={'fsdp': -1}",
      "import slm_jax.evaluation.periodic", "train.periodic_evals=[@asr_eval_hook()]",
      "train.periodic_eval_every=2", f"asr_eval_hook.manifest='{corpus}/manifest_test.jsonl'",
      "get_text_vocabulary.kind='bytes'", "get_speech_tokenizer.kind='dmel'",
      f"get_speech_tokenizer.path='{other_dmel}'",
      "eval_tokenizers.text_vocab=@get_text_vocabulary()",
      "eval_tokenizers.speech_tokenizer=@get_speech_tokenizer()",
  ]
  configuration.parse(["models/tiny.gin", "runs/pretrain.gin"], params, finalize=False)
  with pytest.raises(VocabMismatchError, match="periodic evaluations' tokenizers.*speech tokenizer"):
    loop.train(str(tmp_path / "run"), progress=False)
  assert not os.path.exists(tmp_path / "run" / "checkpoints" / "2")
  assert not os.path.exists(tmp_path / "run" / "operative_config.gin")
