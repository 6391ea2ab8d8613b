"""`make demo`: the main job, end to end on CPU from nothing but Debian packages.

  python -m slm_jax.tools.demo --workdir=runs/demo [--corpus_dir=data/demo_corpus]
                               [--gin_param=TOTAL_STEPS=1200] [--miniature] [--synthetic]

1. builds the offline demo corpus: fortunes sentences spoken by flite voices with word timings,
   split by sentence, plus real speech from pocketsphinx-testdata          slm-data build-demo
2. trains a 512-piece sentencepiece model on the training sentences and
   saves the dMel speech tokenizer (80 bins x 16 levels at 50 Hz, 4 frames
   per position)                                                           slm-data train-spm
3. caches the demo mixture (ASR + TTS + a little text LM) for train and validation  slm-data cache
   and builds the spoken-LM pairwise sets                                  slm-eval build-pairwise
4. trains the demo model (configs/runs/demo.gin) with the grain pipeline: checkpoints, TensorBoard
   logs (losses, and held-out ASR CER and pairwise accuracy over steps)    slm-train
5. exports an inference checkpoint                                         slm-export
6. evaluates it: ASR CER/WER on the held-out flite utterances (per voice) and on real recordings,
   TTS loopback WER (generated speech -> Griffin-Lim -> pocketsphinx) beside the tokenizer's
   ceiling, spoken-LM pairwise accuracies, held-out losses; each beside its no-learning baseline
                                                                           slm-eval
7. generates: the transcript of a held-out flite recording and of a real recording, and a wav of
   a sentence that is not in the corpus                                    slm-generate
8. writes WORKDIR/report.md (+ report.json) and WORKDIR/curves.png, and prints the report.

Every stage is skipped when its output exists (training resumes from its last checkpoint; the
evaluation and generation are redone only for a newer checkpoint), so rerunning continues where
it stopped. `--miniature` runs the same pipeline at toy size (the test suite's end-to-end check);
`--synthetic` only trains on the built-in synthetic task (configs/runs/demo_synthetic.gin);
`--corpus_only` runs stage 1 alone, on requirements-corpus.txt's packages (`make demo` runs it
while pip installs the rest).
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from typing import Sequence

from slm_jax.tools import cli_errors

DEMO_GIN = "runs/demo.gin"
TASK_GIN = "tasks/demo_main.gin"
SYNTHETIC_GIN = "runs/demo_synthetic.gin"
MIXTURE = "demo_main"
TEXT_VOCAB_SIZE = 512
DMEL_DIRNAME = "dmel50x4"
# The corpus's voices: flite's 16 kHz voices, which the offline recognizer understands (the TTS
# loopback needs that); espeak-ng would add variety but the recognizer cannot score it.
VOICES = "flite:slt,flite:awb,flite:rms,flite:kal16"
# A sentence the corpus does not contain, for the TTS example.
NOVEL_SENTENCE = "the old river boat carried seven quiet travelers past the green hills"
# The recipe's mixture (configs/tasks/demo_main.gin): its caches live in CORPUS/cache/demo_main.
DEFAULT_RATES = {"demo_asr": 2.0, "demo_text_lm": 0.25, "demo_tts_words": 1.0}
TTS_MAX_FRAMES = 125   # 10 s at 12.5 positions per second: the longest TTS example answer
# The miniature's TTS answers: an untrained model speaks every word to its cap, so keep them short.
MINIATURE_TTS_FRAMES, MINIATURE_TTS_POSITIONS_PER_WORD = 16, 2

# The miniature pipeline (tests): a handful of sentences, a toy model, a few steps, tiny evals.
MINIATURE_BINDINGS = [
    "TOTAL_STEPS = 6", "BATCH_SIZE = 4", "SEQ_LEN = 256", "WARMUP_STEPS = 2",
    "train.eval_every = 3", "train.eval_batches = 1", "CheckpointOptions.save_every = 3",
    "ModelConfig.num_layers = 2", "ModelConfig.embed_dim = 64", "ModelConfig.num_heads = 2",
    "ModelConfig.num_kv_heads = 1", "ModelConfig.head_dim = 32", "ModelConfig.mlp_dim = 128",
    "train.periodic_eval_every = 3", "asr_eval_hook.max_examples = 2",
    "asr_eval_hook.max_new_tokens = 8",
    "asr_eval_hook.joint_ctc_weight = None",   # joint decoding is still run by slm-eval below
    "pairwise_eval_hook.max_pairs = 2",
]


class Stage:
  """Prints a stage's header and duration; records the duration in `timings`."""

  def __init__(self, name: str, timings: dict):
    self.name, self.timings = name, timings

  def __enter__(self):
    print(f"\n== demo: {self.name} ==", flush=True)
    self.t0 = time.time()
    return self

  def __exit__(self, *exc):
    dt = time.time() - self.t0
    self.timings[self.name] = round(self.timings.get(self.name, 0.0) + dt, 1)
    if exc[0] is None:
      print(f"== demo: {self.name} done in {dt:.0f} s ==", flush=True)


def _run(what: str, module: str, args: list[str], capture: bool = False) -> str:
  cmd = [sys.executable, "-m", module] + args
  print(f"$ {' '.join(cmd[2:])}", flush=True)
  proc = subprocess.run(cmd, check=False, text=True,
                        stdout=subprocess.PIPE if capture else None)
  if proc.returncode:
    raise SystemExit(f"demo: {what} failed (exit {proc.returncode}); fix the error above and rerun "
                     "`make demo` (finished stages are kept)")
  return proc.stdout if capture else ""


# -- 1-3: data ----------------------------------------------------------------------------------
def build_corpus(corpus_dir: str, miniature: bool, timings: dict, sentences: int = 4500,
                 voices_per_sentence: int = 1) -> None:
  """Stage 1, the corpus (kept when present). Needs only numpy, soundfile, gin-config and tqdm
  (requirements-corpus.txt) and Debian's flite: `make demo` runs it (`--corpus_only`) while pip
  installs the rest."""
  with Stage("corpus", timings):
    if not os.path.exists(os.path.join(corpus_dir, "build_info.json")):
      # One reading per sentence: as much audio as two readings of half the sentences, but twice
      # the transcripts, so the decoder gains less from recalling training sentences and more
      # from listening (the four voices still alternate across sentences).
      # make demo-long reads each sentence in two voices: more audio for a longer run, with the
      # same texts (the builder accepts about 8,100 of the fortunes' sentences).
      size = ["--max_sentences", "150", "--voices_per_sentence", "1"] if miniature else [
          "--max_sentences", str(sentences), "--voices_per_sentence", str(voices_per_sentence)]
      _run("building the demo corpus", "slm_jax.tools.data",
           ["build-demo", "--out", corpus_dir, "--voices", VOICES, "--quiet"] + size)
    else:
      print(f"corpus present at {corpus_dir}")
      if not miniature:
        _note_corpus_size(corpus_dir, sentences, voices_per_sentence)


def prepare_data(corpus_dir: str, miniature: bool, timings: dict,
                 sentences: int = 4500, gin_params: Sequence[str] = (),
                 rates: dict | None = None, voices_per_sentence: int = 1) -> list[str]:
  """Corpus, tokenizers, caches and pairwise sets; returns the gin bindings that point training
  at them.

  sentences, voices_per_sentence: the size of a new corpus (an existing one is kept as it is,
  with a note when it was built with other sizes).

  gin_params: the user's extra bindings; the saved dMel tokenizer and the caches follow them too
  (e.g. `MelConfig.n_mels = 40`, a task's `select_speakers.speakers`).
  rates: the mixture's task rates (`check_gin_params`; None: the recipe's). They name the caches'
  directory (`cache_dirname`), and a cache whose mixture.json holds other rates is redone. Other
  task bindings (a template option, a speaker selection) are not told apart: give such a run its
  own --corpus_dir, or delete CORPUS/cache first.
  """
  build_corpus(corpus_dir, miniature, timings, sentences, voices_per_sentence)
  tok_dir = os.path.join(corpus_dir, "tokenizers")
  spm_prefix = os.path.join(tok_dir, f"spm{TEXT_VOCAB_SIZE}")
  dmel_dir = os.path.join(tok_dir, DMEL_DIRNAME)
  with Stage("tokenizers", timings):
    if not os.path.exists(spm_prefix + ".model"):
      _run("training sentencepiece", "slm_jax.tools.data",
           ["train-spm", "--input", os.path.join(corpus_dir, "texts.txt"),
            "--vocab_size", str(TEXT_VOCAB_SIZE), "--out", spm_prefix])
    if not os.path.exists(os.path.join(dmel_dir, "speech_tokenizer.json")):
      # dMel needs no training: save the one configs/models/demo.gin describes, so the caches,
      # the export and every later reader use exactly these settings.
      from slm_jax import configuration  # pylint: disable=import-outside-toplevel
      from slm_jax.data.speech.dmel import DMelTokenizer  # pylint: disable=import-outside-toplevel
      configuration.parse(["models/demo.gin"], gin_params, finalize=False)
      DMelTokenizer().save(dmel_dir)
      print(f"saved the dMel tokenizer to {dmel_dir}")

  from slm_jax.data.speech import load_speech_tokenizer  # pylint: disable=import-outside-toplevel
  from slm_jax.data.text import SentencePieceVocab  # pylint: disable=import-outside-toplevel
  rates = DEFAULT_RATES if rates is None else rates
  cache_root = os.path.join(corpus_dir, "cache", cache_dirname(rates))
  bindings = [
      f"DEMO_CORPUS_DIR = '{corpus_dir}'",
      f"DEMO_CACHE = '{cache_root}'",
      f"UnifiedVocab.text_vocab_name = '{SentencePieceVocab(spm_prefix + '.model').name}'",
      f"UnifiedVocab.speech_tokenizer_name = '{load_speech_tokenizer(dmel_dir).name}'",
  ]
  task_bindings = bindings + [f"demo_text_vocab.path = '{spm_prefix}.model'",
                              f"demo_speech_tokenizer.path = '{dmel_dir}'"]
  gin_args = ["--gin_file", "models/demo.gin", "--gin_file", TASK_GIN]
  for b in task_bindings + list(gin_params):
    gin_args += ["--gin_param", b]
  with Stage("caches", timings):
    # One command for both splits: this process and one spawned worker each take the next
    # component cache (task x split) as they finish one, so both cores stay busy to the end (the
    # train split's ASR and TTS caches are the big ones). A split without mixture.json was
    # interrupted: it is cached again from the start.
    # A split whose mixture.json names other rates was cached for another mixture: redone.
    missing = [s for s in ("train", "validation") if cached_rates(cache_root, s) != rates]
    for split in sorted({"train", "validation"} - set(missing)):
      print(f"cache present at {os.path.join(cache_root, split)}")
    if missing:
      _run(f"caching {MIXTURE} ({', '.join(missing)})", "slm_jax.tools.data",
           gin_args + ["cache", "--task", MIXTURE, "--split", ",".join(missing),
                       "--out", os.path.join(cache_root, "{split}"), "--workers", "2",
                       "--overwrite", "--quiet"])
  # Training also transcribes held-out utterances and scores the pairwise sets every few hundred
  # steps (ASR CER and pairwise accuracy curves).
  pairwise = build_pairwise_sets(corpus_dir, miniature, timings)
  return bindings + [
      f"DEMO_ASR_MANIFEST = '{os.path.join(corpus_dir, 'manifest_validation.jsonl')}'",
      f"DEMO_PAIRWISE = '{pairwise}'",
      f"DEMO_TEXT_TOKENIZER = '{spm_prefix}.model'",
      f"DEMO_SPEECH_TOKENIZER = '{dmel_dir}'"]


def build_pairwise_sets(corpus_dir: str, miniature: bool, timings: dict) -> str:
  """The spoken-LM pairwise sets of the corpus (kept when present); returns their directory.
  Built before training: its periodic evaluations score them (pairwise accuracy over steps)."""
  pairwise = os.path.join(corpus_dir, "pairwise")
  with Stage("pairwise sets", timings):
    if os.path.exists(os.path.join(pairwise, "info.json")):
      print(f"pairwise sets present at {pairwise}")
      return pairwise
    _run("building the pairwise sets", "slm_jax.tools.evaluate",
         ["build-pairwise", "--corpus_dir", corpus_dir, "--out", pairwise,
          "--num_pairs", "4" if miniature else "32"])
  return pairwise


def _build_info(corpus_dir: str) -> dict | None:
  """The corpus's build_info.json (None when missing or unreadable)."""
  try:
    with open(os.path.join(corpus_dir, "build_info.json"), encoding="utf-8") as f:
      return json.load(f)
  except (OSError, ValueError):
    return None


def _note_corpus_size(corpus_dir: str, sentences: int, voices_per_sentence: int) -> None:
  """Says so when an existing corpus was built with other sizes than this run asks for."""
  info = _build_info(corpus_dir) or {}
  built = (info.get("max_sentences"), info.get("voices_per_sentence"))
  if built != (sentences, voices_per_sentence):
    print(f"note: the corpus at {corpus_dir} was built with {built[0]} sentences x {built[1]} "
          f"voices, not the {sentences} x {voices_per_sentence} asked for; it is used as it is "
          "(delete it, or give another --corpus_dir, to build the asked size)")


def cached_rates(cache_root: str, split: str) -> dict | None:
  """The rates a finished cache of `split` was built with (its mixture.json), None if absent."""
  path = os.path.join(cache_root, split, "mixture.json")
  if not os.path.exists(path):
    return None
  with open(path, encoding="utf-8") as f:
    return {t: float(r) for t, r in json.load(f).get("rates", {}).items()}


# -- 5-7: export, evaluation, generation ---------------------------------------------------------
def latest_step(workdir: str) -> int | None:
  ckpt_dir = os.path.join(workdir, "checkpoints")
  steps = [int(d) for d in os.listdir(ckpt_dir) if d.isdigit()] if os.path.isdir(ckpt_dir) else []
  return max(steps) if steps else None


def export(workdir: str, corpus_dir: str, step: int, timings: dict) -> str:
  out = os.path.join(workdir, "export")
  with Stage("export", timings):
    info = os.path.join(out, "export_info.json")
    if os.path.exists(info) and json.load(open(info)).get("step") == step:
      print(f"inference checkpoint of step {step} present at {out}")
      return out
    tok_dir = os.path.join(corpus_dir, "tokenizers")
    _run("exporting", "slm_jax.tools.export",
         ["--workdir", workdir, "--out", out, "--step", str(step),
          "--text_tokenizer", os.path.join(tok_dir, f"spm{TEXT_VOCAB_SIZE}.model"),
          "--speech_tokenizer", os.path.join(tok_dir, DMEL_DIRNAME)])
  return out


def evaluate(export_dir: str, workdir: str, corpus_dir: str, step: int, miniature: bool,
             timings: dict, test_utterances: int | None = None,
             joint: tuple[float, int] | None = None, rates: dict | None = None) -> dict:
  """slm-eval of the exported checkpoint; test_utterances: transcribe only the first N utterances
  of the flite test split (None: all of them); joint: (CTC weight, beam size) of joint
  CTC/attention decoding (None: none, the demo's budget); rates: the mixture's (None: the
  recipe's), which say how the TTS is spoken (`tts_mode`)."""
  out = os.path.join(workdir, "eval", f"results_{step}.json")
  with Stage("evaluate", timings):
    if os.path.exists(out):
      print(f"evaluation of step {step} present at {out}")
      return json.load(open(out))
    pairwise = os.path.join(corpus_dir, "pairwise")   # built before training (prepare_data)
    # TTS sentences cost the most (generation, Griffin-Lim and three recognitions each: the
    # answer, the original audio and its resynthesis; about 7.5 s each on 2 cores), so the demo
    # scores 12 of them.
    n_asr, n_tts = (3, 2) if miniature else (None, 12)
    # One process: ASR on every held-out utterance (flite voices, and the real recordings),
    # held-out losses, the pairwise sets, and the TTS loopback on distinct held-out sentences
    # (one reading each: its audio gives the tokenizer's ceiling and the original audio's WER).
    part = os.path.join(workdir, "eval", f"part_{step}")
    os.makedirs(part, exist_ok=True)
    tts_manifest = os.path.join(part, "tts_sentences.jsonl")
    _write_distinct_sentences(corpus_dir, "test", tts_manifest, n_tts)
    test_manifest = os.path.join(corpus_dir, "manifest_test.jsonl")
    if test_utterances is not None:
      test_manifest = os.path.join(part, "asr_test.jsonl")
      _write_first_utterances(corpus_dir, "test", test_manifest, test_utterances)
    args = ["--checkpoint", export_dir, "--tensorboard", os.path.join(workdir, "tensorboard"),
            "--no_progress", "--out", os.path.join(part, "results.json"),
            "--asr_manifest", f"flite_test={test_manifest}",
            "--asr_manifest", f"real={os.path.join(corpus_dir, 'manifest_test_real.jsonl')}",
            "--loss_cache", os.path.join(corpus_dir, "cache", cache_dirname(
                DEFAULT_RATES if rates is None else rates)),
            "--pairwise_dir", pairwise, "--pairwise_normalize",
            "--tts_manifest", tts_manifest, "--tts_out", os.path.join(workdir, "eval", f"tts_{step}")]
    if n_asr:
      args += ["--max_examples", str(n_asr)]
    if miniature:
      args += ["--tts_max_positions_per_word", str(MINIATURE_TTS_POSITIONS_PER_WORD),
               "--tts_max_new_tokens", str(MINIATURE_TTS_FRAMES)]
    if joint:
      args += ["--ctc_weight", f"{joint[0]:g}", "--beam_size", str(joint[1]),
               "--pre_beam", str(2 * joint[1])]
    else:
      args += ["--no_joint"]
    args += ["--tts_mode", tts_mode(DEFAULT_RATES if rates is None else rates)]
    _run("evaluating", "slm_jax.tools.evaluate", args)
    results = json.load(open(os.path.join(part, "results.json")))
    tts = results.get("tts") or {}
    results["tts"] = next(iter(tts.values())) if tts else None
    from slm_jax.atomic_write import atomic_write  # pylint: disable=import-outside-toplevel
    atomic_write(out, json.dumps(results, indent=1))
  return results


def tts_mode(rates: dict) -> str:
  """How the evaluation speaks: "words" (word injection, slm-eval --tts_mode words) when the
  mixture's rates (`check_gin_params`) give word-interleaved TTS a rate (`demo_tts_words`: the
  recipe), else "whole" (e.g. tasks/demo_main_whole.gin). The rates, not a gin query: the task
  bindings live in the task gin file, which training does not parse."""
  return "words" if float(rates.get("demo_tts_words", 0.0)) > 0 else "whole"


def _write_distinct_sentences(corpus_dir: str, split: str, out: str, limit: int) -> None:
  """The first flite reading of each distinct sentence of a split, audio paths made absolute."""
  _write_manifest_rows(corpus_dir, split, out, limit, distinct_sentences=True)


def _write_first_utterances(corpus_dir: str, split: str, out: str, limit: int) -> None:
  """The first `limit` utterances of a split's manifest, audio paths made absolute."""
  _write_manifest_rows(corpus_dir, split, out, limit, distinct_sentences=False)


def _write_manifest_rows(corpus_dir: str, split: str, out: str, limit: int,
                         distinct_sentences: bool) -> None:
  seen, rows = set(), []
  with open(os.path.join(corpus_dir, f"manifest_{split}.jsonl")) as f:
    for line in f:
      if len(rows) == limit:
        break
      rec = json.loads(line)
      if distinct_sentences and (rec["text"] in seen or "flite" not in rec.get("speaker", "flite")):
        continue
      seen.add(rec["text"])
      rec["audio_path"] = os.path.join(corpus_dir, rec["audio_path"])
      rows.append(json.dumps(rec))
  with open(out, "w") as f:
    f.write("\n".join(rows) + "\n")


def generate_examples(export_dir: str, workdir: str, results: dict, step: int,
                      timings: dict, mode: str = "words", miniature: bool = False) -> list[dict]:
  """The first transcript of each ASR set (from the evaluation) and, with slm-generate, a wav of
  a sentence that is not in the corpus, spoken in TTS `mode` (`tts_mode`: as it was trained;
  `miniature`: at most MINIATURE_TTS_FRAMES positions)."""
  out = os.path.join(workdir, "examples", f"step_{step}.json")
  with Stage("generate", timings):
    if os.path.exists(out):
      print(f"examples of step {step} present at {out}")
      return json.load(open(out))
    examples = []
    for name, what in (("flite_test", "held-out flite recording"), ("real", "real recording")):
      for suffix, how in (("", "decoder"), ("/ctc", "CTC head"),
                          ("/joint", "joint CTC/attention")):
        for ex in results.get("asr", {}).get(name + suffix, {}).get("examples", [])[:1]:
          examples.append({"what": f"ASR of a {what} ({how})", "audio": ex.get("id"),
                           "speaker": ex.get("speaker"), "reference": ex.get("reference"),
                           "output": ex.get("hypothesis") or ""})
    wav = os.path.join(workdir, "examples", f"tts_step_{step}.wav")
    os.makedirs(os.path.dirname(wav), exist_ok=True)
    printed = _run("generating", "slm_jax.tools.generate",
                   ["--checkpoint", export_dir, "--task", "tts", "--text", NOVEL_SENTENCE,
                    "--out", wav,
                    "--max_new_tokens", str(MINIATURE_TTS_FRAMES if miniature else TTS_MAX_FRAMES),
                    "--tts_mode", mode],
                   capture=True)
    print(printed.strip())
    examples.append({"what": f"TTS of a sentence not in the corpus ({mode} mode)",
                     "text": NOVEL_SENTENCE,
                     "output": wav if os.path.exists(wav) else None})
    from slm_jax.atomic_write import atomic_write  # pylint: disable=import-outside-toplevel
    atomic_write(out, json.dumps(examples, indent=1))
  return examples


# -- 8: report ----------------------------------------------------------------------------------
def _fmt(x, pct=True):
  if x is None:
    return "n/a"
  return f"{100 * x:.1f}%" if pct else f"{x:.3f}"


def report(workdir: str, corpus_dir: str, step: int, train_result: dict, results: dict,
           examples: list[dict], timings: dict, total_s: float) -> str:
  """Writes report.md / report.json and the curves PNG; returns the markdown."""
  from slm_jax.tools import plot_metrics  # pylint: disable=import-outside-toplevel
  tb = os.path.join(workdir, "tensorboard")
  png = plot_metrics.plot_run(tb, os.path.join(workdir, "curves.png"))
  scalars = plot_metrics.read_scalars(tb)
  lines = [f"# slm_jax demo report (step {step})", ""]
  losses = scalars.get("train/loss", [])
  if losses:
    lines.append(f"- train loss {losses[0][1]:.3f} (step {losses[0][0]}) -> {losses[-1][1]:.3f} "
                 f"(step {losses[-1][0]})")
  loss = results.get("loss", {})
  if loss:
    lines += ["", "## Held-out loss (validation caches)", "",
              "| task | CE | text CE | speech CE (channel 0) |", "|---|---|---|---|"]
    for task, m in sorted(loss.items()):
      lines.append(f"| {task} | {_fmt(m.get('loss/ce'), False)} | "
                   f"{_fmt(m.get('loss/text_ce'), False)} | "
                   f"{_fmt(m.get('loss/speech_ce'), False)} |")
  lines += ["", "## ASR of held-out speech", "",
            "NAME: the decoder's greedy transcripts; NAME/ctc: best path of the CTC head; "
            "NAME/joint: beam search over the decoder and the CTC prefix score together.", "",
            "| set | utterances | CER | WER | no-learning baseline: CER / WER against other "
            "utterances' references |", "|---|---|---|---|---|"]
  for name, asr in sorted(results.get("asr", {}).items()):
    base = asr.get("baseline", {})
    lines.append(f"| {name} | {asr.get('utterances')} | {_fmt(asr.get('cer'))} | "
                 f"{_fmt(asr.get('wer'))} | {_fmt(base.get('deranged_cer'))} / "
                 f"{_fmt(base.get('deranged_wer'))} |")
    for spk, r in sorted(asr.get("per_speaker", {}).items()):
      base = r.get("baseline", {})
      lines.append(f"| &nbsp; {spk} | {r.get('utterances')} | {_fmt(r.get('cer'))} | "
                   f"{_fmt(r.get('wer'))} | {_fmt(base.get('deranged_cer'))} / "
                   f"{_fmt(base.get('deranged_wer'))} |")
  tts = results.get("tts")
  if tts:
    lines += ["", f"## TTS loopback ({tts.get('mode', 'whole')} mode: generated dMel -> "
              "Griffin-Lim audio -> pocketsphinx)", ""]
    if "skipped" in tts:
      lines.append(f"not scored: {tts['skipped']}")
    else:
      lines += ["| sentences | loopback WER / CER | tokenizer ceiling: resynthesis WER | original "
                "audio WER | no-learning baseline WER |", "|---|---|---|---|---|",
                f"| {tts.get('utterances')} | {_fmt(tts.get('wer'))} / {_fmt(tts.get('cer'))} | "
                f"{_fmt(tts.get('resynthesis', {}).get('wer'))} | "
                f"{_fmt(tts.get('original', {}).get('wer'))} | "
                f"{_fmt(tts.get('baseline', {}).get('deranged_wer'))} |"]
      for ex in tts.get("examples", [])[:3]:
        lines += [f"- \"{ex['reference']}\" -> heard as \"{ex['hypothesis']}\" ({ex.get('wav')})"]
  pw = results.get("pairwise")
  if pw:
    lines += ["", "## Spoken-LM pairwise accuracy (length-normalized log-likelihood; chance 50%)",
              "", "| set | condition | pairs | accuracy |", "|---|---|---|---|"]
    for set_name, conds in sorted(pw.items()):
      for cond, r in sorted(conds.items()):
        if isinstance(r, dict) and "accuracy" in r:
          lines.append(f"| {set_name} | {cond} | {r.get('pairs')} | {_fmt(r.get('accuracy'))} |")
  if examples:
    lines += ["", "## Examples", ""]
    for ex in examples:
      if "reference" in ex:
        lines += [f"- {ex['what']} ({ex.get('speaker')}, {ex['audio']}):",
                  f"  - reference:  {ex['reference']}",
                  f"  - transcript: {ex['output'] or '(empty)'}"]
      else:
        lines.append(f"- {ex['what']}: \"{ex['text']}\" -> {ex['output']}")
  lines += ["", "## Where things are", "",
            f"- corpus, tokenizers, caches: {corpus_dir}",
            f"- checkpoints: {os.path.join(workdir, 'checkpoints')}",
            f"- inference checkpoint: {os.path.join(workdir, 'export')}",
            f"- evaluation results: {os.path.join(workdir, 'eval')}",
            f"- curves: {png}",
            f"- config: {os.path.join(workdir, 'operative_config.gin')}",
            f"- TensorBoard: {tensorboard_command(tb)}",
            "", "## Time", "",
            "- " + ", ".join(f"{k} {v:.0f} s" for k, v in timings.items())
            + f"; total {total_s / 60:.1f} min"]
  built_s = (_build_info(corpus_dir) or {}).get("build_seconds")
  if built_s is not None and timings.get("corpus", 0.0) < 0.5 * built_s:
    lines.append(f"- the corpus was built before this run (`make demo` builds it while pip "
                 f"installs; `--corpus_only`) in {built_s:.0f} s")
  parts = results.get("seconds") or {}
  if parts:
    lines.append("- the evaluation by part: " + ", ".join(f"{k} {v:.0f} s" for k, v in parts.items()))
  tail = [h for h in train_result.get("history", []) if "tokens_per_s" in h]
  if tail:
    tps = sorted(h["tokens_per_s"] for h in tail)[len(tail) // 2]
    lines.append(f"- training throughput {tps:.0f} tokens/s (median)")
  text = "\n".join(lines) + "\n"
  from slm_jax.atomic_write import atomic_write  # pylint: disable=import-outside-toplevel
  atomic_write(os.path.join(workdir, "report.md"), text)
  atomic_write(os.path.join(workdir, "report.json"), json.dumps(
      {"step": step, "results": results, "examples": examples, "timings_s": timings,
       "total_s": round(total_s, 1)}, indent=1))
  return text


def tensorboard_command(logdir: str, bin_dir: str | None = None) -> str:
  """The command that opens `logdir`: this environment's `tensorboard` (`make demo` installs it
  into .venv, whose bin/ need not be on PATH), or how to install it."""
  exe = os.path.join(bin_dir or os.path.dirname(sys.executable), "tensorboard")
  if os.path.exists(exe):
    relative = os.path.relpath(exe)
    return f"{exe if relative.startswith('..') else relative} --logdir {logdir}"
  if shutil.which("tensorboard"):
    return f"tensorboard --logdir {logdir}"
  return f"tensorboard --logdir {logdir}  (not installed: pip install 'tensorboard>=2.20,<3')"


# -- main ---------------------------------------------------------------------------------------
def train_summary(workdir: str, result: dict, minutes: float) -> None:
  from slm_jax.tools import plot_metrics  # pylint: disable=import-outside-toplevel
  tb = os.path.join(workdir, "tensorboard")
  png = plot_metrics.plot(tb, os.path.join(workdir, "loss.png"))
  losses = plot_metrics.read_scalars(tb)["train/loss"]
  print("\n== demo: training summary ==")
  if result["history"]:
    print(f"  trained steps {result['history'][0]['step']}..{result['history'][-1]['step']} in "
          f"{minutes:.1f} min")
  else:
    print(f"  already trained to step {losses[-1][0]}: nothing to do (remove {workdir} to retrain)")
  print(f"  train loss: {losses[0][1]:.3f} at step {losses[0][0]} -> {losses[-1][1]:.3f} at step "
        f"{losses[-1][0]}")
  if result["eval"]:
    print("  held-out loss: " + ", ".join(f"{e['loss/ce']:.3f} (step {e['step']})"
                                          for e in result["eval"]))
  print(f"  loss curve: {png}")


def check_gin_params(files: list[str], gin_params: list[str]) -> tuple[list[str], dict]:
  """The user's bindings as training parses them, checked before any stage runs (a typo fails in
  seconds, not after the corpus and caches), and the `demo_main` mixture's rates they give.

  Task bindings (e.g. `demo_main_rates.tts = 0.5`) shape the caches; training reads caches, so
  the task modules are imported for them to parse. Returns (bindings for training, rates: task
  name -> rate for the tasks with a rate > 0)."""
  import gin  # pylint: disable=import-outside-toplevel
  from slm_jax import configuration  # pylint: disable=import-outside-toplevel
  params = ["import slm_jax.tasks"] + list(gin_params)
  try:
    configuration.parse(files + [TASK_GIN], params, finalize=False)
    from slm_jax.tasks import demo as demo_tasks  # pylint: disable=import-outside-toplevel
    rates = {f"demo_{t}": float(r) for t, r in demo_tasks.demo_main_rates().items() if r > 0}
  finally:
    gin.clear_config()
  return (params if gin_params else []), rates


def cache_dirname(rates: dict) -> str:
  """The caches' directory under CORPUS/cache: `demo_main` for the recipe's rates, else named by
  the rates (`demo_main-asr1-text_lm0.25-tts_words1`), so an experiment with another mixture
  never reads (or overwrites) the recipe's caches."""
  if rates == DEFAULT_RATES:
    return MIXTURE
  return MIXTURE + "".join(f"-{t[len('demo_'):]}{r:g}" for t, r in sorted(rates.items()))


def train(files: list[str], bindings: list[str], workdir: str, timings: dict) -> dict:
  from slm_jax import configuration  # pylint: disable=import-outside-toplevel
  import slm_jax.train.loop as loop  # pylint: disable=import-outside-toplevel
  configuration.parse(files, bindings)
  with Stage(f"train with {', '.join(files)} into {workdir}", timings) as stage:
    print("(Ctrl-C stops; rerunning resumes from the last checkpoint)", flush=True)
    result = loop.train(workdir)
  timings["train"] = timings.pop(stage.name)
  return result


def main(argv=None) -> int:
  p = argparse.ArgumentParser(prog="demo", description=__doc__,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("--workdir", default="runs/demo")
  p.add_argument("--corpus_dir", default="data/demo_corpus",
                 help="where the demo corpus, its tokenizers and caches live")
  p.add_argument("--sentences", type=int, default=4500,
                 help="fortunes sentences in a new corpus (make demo-long: 8645, i.e. every one the "
                      "builder accepts, in its own corpus_dir)")
  p.add_argument("--voices_per_sentence", type=int, default=1,
                 help="flite readings of each sentence in a new corpus (make demo-long: 2)")
  p.add_argument("--test_utterances", type=int, default=None,
                 help="transcribe only the first N utterances of the test split (default: all)")
  p.add_argument("--joint_ctc_weight", type=float, default=None, metavar="LAMBDA",
                 help="also transcribe by joint CTC/attention decoding with this CTC weight "
                      "(make demo-long: 0.4; default: not, to keep the demo in its budget)")
  p.add_argument("--beam_size", type=int, default=8,
                 help="joint decoding's beam (each hypothesis's 2 x beam best pieces are scored)")
  p.add_argument("--miniature", action="store_true",
                 help="the whole pipeline at toy size (a check, not a model)")
  p.add_argument("--synthetic", action="store_true",
                 help="only train on the synthetic task (no corpus, no evaluation)")
  p.add_argument("--corpus_only", action="store_true",
                 help="only build the corpus (needs just requirements-corpus.txt: `make demo` "
                      "runs this while pip installs the rest)")
  p.add_argument("--gin_file", action="append", default=None,
                 help=f"gin files (default {DEMO_GIN}, or {SYNTHETIC_GIN} with --synthetic)")
  p.add_argument("--gin_param", action="append", default=[], help="extra gin bindings")
  args = p.parse_args(argv)
  for flag in ("sentences", "voices_per_sentence", "test_utterances", "beam_size"):
    value = getattr(args, flag)
    if value is not None and value < 1:
      p.error(f"--{flag} must be >= 1, got {value}")
  if args.joint_ctc_weight is not None and not 0.0 <= args.joint_ctc_weight <= 1.0:
    p.error(f"--joint_ctc_weight must be in [0, 1], got {args.joint_ctc_weight}")
  os.environ.setdefault("JAX_PLATFORMS", "cpu")
  t_start, timings = time.time(), {}
  workdir, corpus_dir = os.path.abspath(args.workdir), os.path.abspath(args.corpus_dir)
  if args.synthetic:
    result = train(args.gin_file or [SYNTHETIC_GIN], args.gin_param, workdir, timings)
    train_summary(workdir, result, timings["train"] / 60)
    return 0
  if args.corpus_only:
    build_corpus(corpus_dir, args.miniature, timings, args.sentences, args.voices_per_sentence)
    return 0
  user_params, rates = check_gin_params(args.gin_file or [DEMO_GIN], args.gin_param)
  bindings = prepare_data(corpus_dir, args.miniature, timings, args.sentences, args.gin_param,
                          rates, args.voices_per_sentence)
  extra = (MINIATURE_BINDINGS if args.miniature else []) + user_params
  result = train(args.gin_file or [DEMO_GIN], bindings + extra, workdir, timings)
  train_summary(workdir, result, timings["train"] / 60)
  step = latest_step(workdir)
  if step is None:
    raise SystemExit(f"demo: no checkpoint in {workdir}/checkpoints after training")
  export_dir = export(workdir, corpus_dir, step, timings)
  joint = None if args.joint_ctc_weight is None else (args.joint_ctc_weight, args.beam_size)
  results = evaluate(export_dir, workdir, corpus_dir, step, args.miniature, timings,
                     args.test_utterances, joint, rates)
  examples = generate_examples(export_dir, workdir, results, step, timings, tts_mode(rates),
                               args.miniature)
  text = report(workdir, corpus_dir, step, result, results, examples, timings,
                time.time() - t_start)
  print("\n" + text)
  return 0


if __name__ == "__main__":
  sys.exit(cli_errors.run_main("demo", main))
