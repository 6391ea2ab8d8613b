"""The main job's orchestrator (`make demo`): its synthetic-task path with a small model, and the
whole pipeline at miniature size."""
import json
import os
import shutil

import gin
import pytest

from slm_jax.tools import demo

SMALL = ["TOTAL_STEPS = 4", "train.eval_every = 2", "CheckpointOptions.save_every = 2",
         "train.log_every = 1", "ModelConfig.num_layers = 1", "ModelConfig.embed_dim = 32",
         "ModelConfig.mlp_dim = 64", "ModelConfig.head_dim = 8", "SEQ_LEN = 32",
         "make_mesh.ici_shape = {'data': 1, 'fsdp': -1}"]


def _demo(workdir):
  gin.clear_config()
  args = ["--synthetic", "--workdir", str(workdir)]
  for p in SMALL:
    args += ["--gin_param", p]
  try:
    return demo.main(args)
  finally:
    gin.clear_config()


def test_demo_trains_summarizes_and_a_rerun_does_nothing(tmp_path, capsys):
  assert _demo(tmp_path / "run") == 0
  out = capsys.readouterr().out
  assert "trained steps 1..4" in out and "held-out loss" in out
  assert os.path.exists(tmp_path / "run" / "loss.png")
  assert sorted(os.listdir(tmp_path / "run" / "checkpoints")) == ["2", "4"]
  assert _demo(tmp_path / "run") == 0
  assert "already trained to step 4" in capsys.readouterr().out


def test_the_summary_names_a_tensorboard_that_runs(tmp_path, monkeypatch):
  # `make demo` installs the tensorboard extra into the venv it runs the demo with.
  exe = demo.tensorboard_command("logs").split()[0]
  assert os.access(exe, os.X_OK) or shutil.which(exe), exe
  monkeypatch.setenv("PATH", "")
  bin_dir = tmp_path / "bin"
  bin_dir.mkdir()
  assert "not installed: pip install" in demo.tensorboard_command("logs", str(bin_dir))
  (bin_dir / "tensorboard").write_text("")
  assert demo.tensorboard_command("logs", str(bin_dir)) == f"{bin_dir / 'tensorboard'} --logdir logs"


@pytest.mark.slow
def test_the_miniature_demo_runs_every_stage_and_a_rerun_skips_them(tmp_path, capsys):
  """The real pipeline (corpus from flite, tokenizers, caches, training with periodic ASR CER,
  export, slm-eval, slm-generate, report) at toy size."""
  if not shutil.which("flite"):
    pytest.skip("needs Debian's flite (make apt) to synthesize the corpus")
  pytest.importorskip("pocketsphinx", reason="the TTS loopback needs the asr extra (pocketsphinx)")
  run, corpus = tmp_path / "run", tmp_path / "corpus"
  args = ["--miniature", "--workdir", str(run), "--corpus_dir", str(corpus),
          "--joint_ctc_weight", "0.5", "--beam_size", "2"]
  gin.clear_config()
  try:
    assert demo.main(args) == 0
  finally:
    gin.clear_config()
  out = capsys.readouterr().out
  for stage in ("corpus", "tokenizers", "caches", "pairwise sets", "export", "evaluate",
                "generate"):
    assert f"== demo: {stage} done" in out, stage
  report = json.loads((run / "report.json").read_text())
  step = report["step"]
  assert step == 6 and sorted(os.listdir(run / "checkpoints"))[-1] == "6"
  results = report["results"]
  for name in ("flite_test", "real", "flite_test/ctc", "flite_test/joint"):
    asr = results["asr"][name]
    assert 0.0 <= asr["cer"] and asr["baseline"]["empty_cer"] == 1.0
  # The character CTC head and the decoder decode together (the tokenizer spells the pieces).
  assert results["asr"]["flite_test/joint"]["beam_size"] == 2
  assert results["asr"]["flite_test/joint"]["pre_beam"] == 4
  assert "wer" in results["tts"] and "wer" in results["tts"]["resynthesis"]
  assert results["tts"]["mode"] == "words"     # spoken the way the recipe trains TTS
  assert results["pairwise"]
  kinds = [ex["what"] for ex in report["examples"]]
  assert any("flite" in k for k in kinds) and any("real" in k for k in kinds)
  tts_wav = [ex["output"] for ex in report["examples"] if ex["what"].startswith("TTS")][0]
  assert os.path.getsize(tts_wav) > 44
  assert (run / "curves.png").stat().st_size > 0
  md = (run / "report.md").read_text()
  assert "no-learning baseline" in md and "TTS loopback" in md and "pairwise" in md.lower()
  # The curves hold the held-out ASR CER over steps, written during training.
  from slm_jax.tools import plot_metrics  # pylint: disable=import-outside-toplevel
  tags = plot_metrics.read_scalars(str(run / "tensorboard"))
  assert any(t.startswith("eval/") and "cer" in t for t in tags), sorted(tags)
  # ... and the pairwise accuracies, scored on the sets built before training.
  assert any(t.startswith("eval/pairwise/") and t.endswith("/accuracy") for t in tags), sorted(tags)
  # A rerun finds every stage's output and redoes nothing.
  gin.clear_config()
  try:
    assert demo.main(args) == 0
  finally:
    gin.clear_config()
  out = capsys.readouterr().out
  assert "already trained to step 6" in out
  for what in ("corpus present", "cache present", "pairwise sets present",
               f"inference checkpoint of step {step} present",
               f"evaluation of step {step} present", f"examples of step {step} present"):
    assert what in out, what


def test_a_gin_typo_fails_before_any_stage_runs(tmp_path):
  from slm_jax.configuration import ConfigError
  gin.clear_config()
  corpus = tmp_path / "corpus"
  with pytest.raises(ConfigError, match="demo_main_ratez"):
    demo.main(["--workdir", str(tmp_path / "run"), "--corpus_dir", str(corpus),
               "--gin_param", "demo_main_ratez.tts = 0.5"])
  assert not corpus.exists() and not (tmp_path / "run").exists()


def test_task_bindings_parse_for_training_and_name_their_own_caches():
  """A task rate shapes the caches; training (which reads caches) must still accept it, and the
  caches of another mixture live apart from the recipe's."""
  params, rates = demo.check_gin_params([demo.DEMO_GIN], ["demo_main_rates.tts = 0.5"])
  assert params[0] == "import slm_jax.tasks" and params[1:] == ["demo_main_rates.tts = 0.5"]
  assert rates == {"demo_asr": 2.0, "demo_tts": 0.5, "demo_text_lm": 0.25, "demo_tts_words": 1.0}
  assert demo.cache_dirname(rates) == "demo_main-asr2-text_lm0.25-tts0.5-tts_words1"
  from slm_jax import configuration
  try:
    configuration.parse([demo.DEMO_GIN], params, finalize=False)
    assert gin.query_parameter("demo_main_rates.tts") == 0.5
  finally:
    gin.clear_config()
  assert demo.check_gin_params([demo.DEMO_GIN], []) == ([], demo.DEFAULT_RATES)
  assert demo.cache_dirname(demo.DEFAULT_RATES) == "demo_main"
  _, whole = demo.check_gin_params([demo.DEMO_GIN], ["include 'tasks/demo_main_whole.gin'"])
  assert demo.cache_dirname(whole) == "demo_main-asr1-text_lm0.25-tts1"


def test_a_cache_built_for_other_rates_is_not_reused(tmp_path):
  root = tmp_path / "cache"
  assert demo.cached_rates(str(root), "train") is None
  (root / "train").mkdir(parents=True)
  (root / "train" / "mixture.json").write_text(json.dumps(
      {"mixture": "demo_main", "split": "train", "rates": {"demo_asr": 1.0, "demo_tts": 0.5}}))
  assert demo.cached_rates(str(root), "train") == {"demo_asr": 1.0, "demo_tts": 0.5}
  assert demo.cached_rates(str(root), "train") != demo.DEFAULT_RATES


def test_size_flags_below_one_fail_before_any_stage_runs(tmp_path, capsys):
  for flag in ("--sentences", "--voices_per_sentence", "--test_utterances", "--beam_size"):
    with pytest.raises(SystemExit) as exit_info:
      demo.main(["--workdir", str(tmp_path / "run"), flag, "0"])
    assert exit_info.value.code == 2
    assert f"{flag} must be >= 1, got 0" in capsys.readouterr().err
  with pytest.raises(SystemExit) as exit_info:
    demo.main(["--workdir", str(tmp_path / "run"), "--joint_ctc_weight", "1.5"])
  assert exit_info.value.code == 2 and "--joint_ctc_weight" in capsys.readouterr().err
  assert not (tmp_path / "run").exists()


def test_the_test_split_can_be_capped_and_keeps_its_order(tmp_path):
  corpus = tmp_path / "corpus"
  corpus.mkdir()
  rows = [{"id": f"u{i}", "text": f"sentence {i // 2}", "audio_path": f"audio/test/u{i}.wav"}
          for i in range(5)]
  (corpus / "manifest_test.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
  out = tmp_path / "first.jsonl"
  demo._write_first_utterances(str(corpus), "test", str(out), 3)
  got = [json.loads(line) for line in out.read_text().splitlines()]
  assert [r["id"] for r in got] == ["u0", "u1", "u2"]
  assert got[0]["audio_path"] == str(corpus / "audio/test/u0.wav")
  demo._write_first_utterances(str(corpus), "test", str(out), 50)
  assert len(out.read_text().splitlines()) == 5


def test_an_existing_corpus_of_another_size_is_named_not_rebuilt(tmp_path, capsys):
  (tmp_path / "build_info.json").write_text(json.dumps(
      {"max_sentences": 4500, "voices_per_sentence": 1}))
  demo._note_corpus_size(str(tmp_path), 4500, 1)
  assert capsys.readouterr().out == ""
  demo._note_corpus_size(str(tmp_path), 8645, 2)
  out = capsys.readouterr().out
  assert "4500 sentences x 1 voices, not the 8645 x 2 asked for" in out
  assert "another --corpus_dir" in out


def test_demo_long_is_the_demo_recipe_trained_longer():
  """runs/demo_long.gin changes the schedule only: same model, character CTC head, mixture."""
  from slm_jax import configuration
  values = {}
  try:
    for name in ("runs/demo.gin", "runs/demo_long.gin"):
      gin.clear_config()
      configuration.parse([name], ["DEMO_CACHE = 'c'", "DEMO_TEXT_TOKENIZER = 't'",
                                   "DEMO_SPEECH_TOKENIZER = 's'", "DEMO_ASR_MANIFEST = 'm'",
                                   "DEMO_PAIRWISE = 'p'"],
                          finalize=False)
      values[name] = {k: gin.query_parameter(k) for k in (
          "ModelConfig.ctc_alphabet", "ModelConfig.ctc_upsample", "ModelConfig.num_layers",
          "ModelConfig.embed_dim", "%BATCH_SIZE", "%SEQ_LEN", "%TOTAL_STEPS")}
  finally:
    gin.clear_config()
  short, long = values["runs/demo.gin"], values["runs/demo_long.gin"]
  assert long.pop("%TOTAL_STEPS") >= 4 * short.pop("%TOTAL_STEPS")
  assert long == short and long["ModelConfig.ctc_alphabet"]
