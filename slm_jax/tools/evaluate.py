"""slm-eval: evaluate a trained speech-text LM (ASR, TTS loopback, loss, spoken-LM pairs).

  slm-eval --checkpoint EXPORT --asr_manifest test=corpus/manifest_test.jsonl \\
           --asr_manifest real=corpus/manifest_test_real.jsonl --out results.json
  slm-eval --workdir RUN [--step N] --tts_manifest corpus/manifest_test.jsonl --tts_out wavs/
  slm-eval --checkpoint EXPORT --loss_cache corpus/cache/demo_all --pairwise_dir corpus/pairwise
  slm-eval build-pairwise --corpus_dir corpus --out corpus/pairwise      # offline pair sets

Every part is optional; the results go to --out (JSON), to TensorBoard (--tensorboard DIR; with
--workdir, RUN/tensorboard by default, at the checkpoint's step, under eval/) and to a printed
table. docs/evaluation.md says what each number means and which baseline sits beside it.

Exit codes: 0 done; 2 a known error (missing checkpoint or file, a bad manifest line, a
vocabulary mismatch, unreadable audio), said in one line on stderr.
"""
from __future__ import annotations

import argparse
import contextlib
import logging
import os
import sys
import time

from slm_jax.errors import SlmError
from slm_jax.tools import cli_errors

PROG = "slm-eval"


class EvalArgsError(SlmError, ValueError):
  """Flags that do not make an evaluation."""


def parse_args(argv=None) -> argparse.Namespace:
  p = argparse.ArgumentParser(prog=PROG, description=__doc__,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
  src = p.add_mutually_exclusive_group(required=True)
  src.add_argument("--checkpoint", help="an inference checkpoint directory (slm-export --out)")
  src.add_argument("--workdir", help="a training run directory (slm-train --workdir)")
  p.add_argument("--step", type=int, default=None, help="with --workdir: checkpoint step")
  p.add_argument("--text_tokenizer", default=None,
                 help="text tokenizer file when the checkpoint ships none (a sentencepiece "
                 ".model, a tokenizer.json or HF model folder)")
  p.add_argument("--speech_tokenizer", default=None,
                 help="speech tokenizer folder when the checkpoint ships none (e.g. "
                 "corpus/tokenizers/kmeans512)")
  p.add_argument("--asr_manifest", action="append", default=[], metavar="[NAME=]PATH",
                 help="utterances to transcribe (jsonl: audio_path, text[, speaker]); repeatable")
  p.add_argument("--speakers", action="append", default=[], metavar="SUBSTRING",
                 help="only utterances whose speaker contains this (e.g. flite); repeatable")
  p.add_argument("--tts_texts", default=None, help="sentences to speak, one per line")
  p.add_argument("--tts_manifest", default=None,
                 help="sentences with their audio (adds the tokenizer's resynthesis ceiling and "
                 "the original audio's WER)")
  p.add_argument("--tts_out", default=None, help="folder for the generated wavs "
                 "(default: beside --out, or ./slm_eval_tts)")
  p.add_argument("--pairwise_dir", action="append", default=[], metavar="[NAME=]PATH",
                 help="pair sets: a build-pairwise folder, one set's jsonl, a ZeroSpeech 2021 "
                 "lexical/syntactic folder (wavs + gold.csv) or a spoken StoryCloze folder")
  p.add_argument("--pairwise_normalize", action="store_true",
                 help="length-normalized log-likelihood (mean per scored token) instead of the sum")
  p.add_argument("--loss_cache", default=None, help="a cache root of `slm-data cache` "
                 "(ROOT/<split>/<task>/): loss and perplexity per task")
  p.add_argument("--loss_task", default=None, help="a registered seqio Task or Mixture "
                 "(imports slm_jax.tasks; bind its data folders with --gin_param)")
  p.add_argument("--loss_split", default="validation")
  p.add_argument("--gin_param", action="append", default=[], help="with --loss_task")
  p.add_argument("--batch_size", type=int, default=8, help="loss: rows per batch")
  p.add_argument("--seq_len", type=int, default=256, help="loss: row length")
  p.add_argument("--max_examples", type=int, default=None,
                 help="at most this many utterances / sentences / pairs / batches per set")
  p.add_argument("--max_new_tokens", type=int, default=96, help="ASR: longest transcript")
  p.add_argument("--tts_mode", choices=("whole", "words"), default="whole",
                 help="TTS generation: whole (the text, then its speech) or words (each word's "
                 "text injected before its speech, for models trained on word-interleaved TTS: "
                 "the tts_words template)")
  p.add_argument("--tts_max_positions_per_word", type=int, default=None,
                 help="with --tts_mode words: the most speech positions of one word (default 1.5 s)")
  p.add_argument("--tts_max_new_tokens", type=int, default=None,
                 help="TTS: speech frames per answer (default: from the sentence's length)")
  p.add_argument("--slots", type=int, default=8, help="requests decoded together")
  p.add_argument("--recognizer_workers", type=int, default=None,
                 help="TTS loopback: pocketsphinx processes (default: one per core, at most 4)")
  p.add_argument("--ctc_weight", type=float, action="append", default=None, metavar="LAMBDA",
                 help="ASR with a CTC head: joint CTC/attention decoding's CTC weight in [0, 1] "
                 "(reported as NAME/joint; repeat for several, e.g. NAME/joint0.3; default 0.5)")
  p.add_argument("--beam_size", type=int, default=4, help="ASR: joint decoding's beam size")
  p.add_argument("--pre_beam", type=int, default=None,
                 help="ASR with a character CTC head: the decoder's best candidates per "
                 "hypothesis that joint decoding spells and scores (default 1.5 x beam)")
  p.add_argument("--no_joint", action="store_true",
                 help="ASR: skip joint CTC/attention decoding (it is slower than greedy)")
  p.add_argument("--out", default=None, help="results JSON")
  p.add_argument("--tensorboard", default=None, help="TensorBoard log folder for the scalars")
  p.add_argument("--no_progress", action="store_true")
  return p.parse_args(argv)


def parse_build_args(argv) -> argparse.Namespace:
  p = argparse.ArgumentParser(prog=f"{PROG} build-pairwise", description=(
      "Builds offline spoken-LM pair sets from a demo corpus (slm-data build-demo): real words "
      "vs non-words, sentences vs scrambled word order, true vs random endings, spoken by flite "
      "(a voice held out of the corpus when one is installed)."))
  p.add_argument("--corpus_dir", required=True)
  p.add_argument("--out", required=True)
  p.add_argument("--num_pairs", type=int, default=64, help="pairs per set")
  p.add_argument("--voice", default=None, help="flite voice (default: one the corpus did not use)")
  p.add_argument("--seed", type=int, default=0)
  return p.parse_args(argv)


def _check_inputs(args) -> None:
  if not (args.asr_manifest or args.tts_texts or args.tts_manifest or args.pairwise_dir
          or args.loss_cache or args.loss_task):
    raise EvalArgsError("nothing to evaluate: give --asr_manifest, --tts_texts / --tts_manifest, "
                        "--pairwise_dir, --loss_cache or --loss_task")
  if args.tts_texts and args.tts_manifest:
    raise EvalArgsError("give one of --tts_texts or --tts_manifest")
  if args.workdir and not os.path.isdir(args.workdir):
    raise EvalArgsError(f"--workdir {args.workdir!r} does not exist")
  if any(not 0.0 <= w <= 1.0 for w in args.ctc_weight or ()):
    raise EvalArgsError(f"--ctc_weight must be in [0, 1], got {args.ctc_weight}")
  if args.beam_size < 1:
    raise EvalArgsError(f"--beam_size must be >= 1, got {args.beam_size}")
  if args.pre_beam is not None and args.pre_beam < 1:
    raise EvalArgsError(f"--pre_beam must be >= 1, got {args.pre_beam}")
  if args.max_examples is not None and args.max_examples < 1:
    raise EvalArgsError(f"--max_examples must be >= 1, got {args.max_examples}")
  for spec in args.asr_manifest:
    from slm_jax.evaluation.eval_sets import parse_named  # pylint: disable=import-outside-toplevel
    path = parse_named(spec, "asr")[1]
    if not os.path.isfile(path):
      raise EvalArgsError(f"--asr_manifest {path!r} does not exist")
  for path in (args.tts_texts, args.tts_manifest, args.loss_cache):
    if path and not os.path.exists(path):
      raise EvalArgsError(f"{path!r} does not exist")


def with_tokenizers(session, text_path=None, speech_path=None):
  """The session with tokenizers given on the command line (checked against the vocabulary)."""
  from slm_jax.inference.session import Session  # pylint: disable=import-outside-toplevel
  if not (text_path or speech_path):
    return session
  text, speech = session.text_vocab, session.speech_tokenizer
  if text_path:
    from slm_jax.data.text.factory import get_text_vocabulary  # pylint: disable=import-outside-toplevel
    if not os.path.exists(text_path):
      raise EvalArgsError(f"--text_tokenizer {text_path!r} does not exist")
    kind = "sentencepiece" if text_path.endswith(".model") else "hf_tokenizers"
    text = get_text_vocabulary(kind, text_path)
  if speech_path:
    from slm_jax.data.speech.factory import load_speech_tokenizer  # pylint: disable=import-outside-toplevel
    if not os.path.isdir(speech_path):
      raise EvalArgsError(f"--speech_tokenizer {speech_path!r} is not a saved tokenizer folder")
    speech = load_speech_tokenizer(speech_path)
  return Session.from_model(session.model, text, speech, session.info, session.directory)


def _require_tokenizers(session, args) -> None:
  from slm_jax.inference.session import TokenizerUnavailableError  # pylint: disable=import-outside-toplevel
  needs_speech = args.asr_manifest or args.tts_texts or args.tts_manifest or args.pairwise_dir
  needs_text = needs_speech
  if needs_text and session.text_vocab is None:
    raise TokenizerUnavailableError(
        f"{session.directory} ships no text tokenizer: pass --text_tokenizer PATH")
  if needs_speech and session.speech_tokenizer is None:
    raise TokenizerUnavailableError(
        f"{session.directory} ships no speech tokenizer: pass --speech_tokenizer PATH (e.g. "
        "corpus/tokenizers/kmeans512)")


def _name(path: str) -> str:
  base = os.path.basename(os.path.normpath(path))
  base = os.path.splitext(base)[0]
  return base[len("manifest_"):] if base.startswith("manifest_") else base


def load_inputs(args) -> dict:
  """Every evaluation set, read and checked before the model loads (a bad line fails fast)."""
  from slm_jax.evaluation import eval_sets  # pylint: disable=import-outside-toplevel
  inputs = {"asr": [], "tts": None, "pairwise": {}}
  for spec in args.asr_manifest:
    name, path = eval_sets.parse_named(spec, _name(spec))
    inputs["asr"].append((name, eval_sets.read_manifest(path, max_examples=args.max_examples,
                                                        speakers=args.speakers or None)))
  if args.tts_texts or args.tts_manifest:
    path = args.tts_texts or args.tts_manifest
    utts = (eval_sets.read_sentences(path, max_examples=args.max_examples) if args.tts_texts else
            eval_sets.read_manifest(path, max_examples=args.max_examples,
                                    speakers=args.speakers or None))
    inputs["tts"] = (_name(path), utts)
  if args.pairwise_dir:
    from slm_jax.evaluation import pairwise  # pylint: disable=import-outside-toplevel
    for spec in args.pairwise_dir:
      name, path = eval_sets.parse_named(spec, "")
      for set_name, pairs in pairwise.load_pair_sets(path, max_pairs=args.max_examples).items():
        inputs["pairwise"][f"{name}/{set_name}" if name else set_name] = pairs
  return inputs


def evaluate(session, args, inputs: dict, out=None) -> dict:
  """Runs every requested part on `session`; returns the results dict (report.py's layout)."""
  from slm_jax.evaluation import asr_eval, loss_eval, report, tts_eval  # pylint: disable=import-outside-toplevel
  out = out or sys.stdout
  progress = not args.no_progress
  info = session.info or {}
  results = {"checkpoint": info.get("source_workdir") or session.directory,
             "step": info.get("step"), "seconds": {}}
  seconds = results["seconds"]    # wall seconds of each part, for whoever sizes an evaluation

  @contextlib.contextmanager
  def timed(part: str):
    t0 = time.perf_counter()
    yield
    seconds[part] = round(time.perf_counter() - t0, 1)
    print(f"{PROG}: {part} took {seconds[part]:.0f} s", file=sys.stderr)

  if args.loss_cache or args.loss_task:
    kw = dict(split=args.loss_split, batch_size=args.batch_size, seq_len=args.seq_len,
              max_batches=args.max_examples)
    print(f"{PROG}: loss on {args.loss_cache or args.loss_task} ({args.loss_split})", file=sys.stderr)
    with timed("loss"):
      results["loss"] = (loss_eval.evaluate_cached(session.model, args.loss_cache, **kw)
                         if args.loss_cache else loss_eval.evaluate_seqio(session.model,
                                                                          args.loss_task, **kw))
  if inputs["asr"]:
    results["asr"] = {}
    for name, utts in inputs["asr"]:
      print(f"{PROG}: ASR on {name} ({len(utts)} utterances)", file=sys.stderr)
      with timed(f"asr/{name}"):
        frames = [session.encode_audio(u.audio_path) for u in utts]
        results["asr"][name] = asr_eval.evaluate_asr(
            session, utts, max_new_tokens=args.max_new_tokens, slots=args.slots,
            progress=progress, frames=frames)
      if getattr(session.model.cfg, "asr_ctc", False):    # the CTC head's view as well
        with timed(f"asr/{name}/ctc"):
          results["asr"][f"{name}/ctc"] = asr_eval.evaluate_asr(
              session, utts, slots=args.slots, decoder="ctc", frames=frames)
        weights = args.ctc_weight or [0.5]
        for w in ([] if args.no_joint else weights):    # joint CTC/attention beam search
          key = f"{name}/joint" if len(weights) == 1 else f"{name}/joint{w:g}"
          with timed(f"asr/{key}"):
            results["asr"][key] = asr_eval.evaluate_asr(
                session, utts, max_new_tokens=args.max_new_tokens, slots=args.slots,
                decoder="joint", frames=frames, ctc_weight=w, beam_size=args.beam_size,
                pre_beam=args.pre_beam)
  if inputs["tts"]:
    name, utts = inputs["tts"]
    tts_out = args.tts_out or (os.path.join(os.path.dirname(os.path.abspath(args.out)), "tts_wavs")
                               if args.out else "slm_eval_tts")
    print(f"{PROG}: TTS loopback on {name} ({len(utts)} sentences, {args.tts_mode} mode) -> "
          f"{tts_out}", file=sys.stderr)
    with timed("tts"):
      r = tts_eval.evaluate_tts(session, utts, tts_out, slots=args.slots,
                                max_new_tokens=args.tts_max_new_tokens, progress=progress,
                                mode=args.tts_mode,
                                max_positions_per_word=args.tts_max_positions_per_word,
                                recognizer_workers=args.recognizer_workers)
    if "skipped" in r:
      print(f"{PROG}: TTS loopback not scored: {r['skipped']}", file=sys.stderr)
    results["tts"] = {name: r}
  if inputs["pairwise"]:
    from slm_jax.evaluation import pairwise  # pylint: disable=import-outside-toplevel
    results["pairwise"] = {}
    for key, pairs in inputs["pairwise"].items():
      print(f"{PROG}: pairwise {key} ({len(pairs)} pairs)", file=sys.stderr)
      with timed(f"pairwise/{key}"):
        results["pairwise"][key] = pairwise.evaluate_pairs(
            session, pairs, normalize=args.pairwise_normalize, progress=progress)
  print(report.format_table(results), file=out)
  if args.out:
    report.write_json(results, args.out)
    print(f"{PROG}: wrote {args.out}", file=out)
  logdir = args.tensorboard or (os.path.join(args.workdir, "tensorboard") if args.workdir else None)
  if logdir:
    report.write_tensorboard(results, logdir, int(results.get("step") or 0))
  return results


def build_pairwise(argv) -> int:
  args = parse_build_args(argv)
  from slm_jax.evaluation import pairwise_sets  # pylint: disable=import-outside-toplevel
  info = pairwise_sets.build_demo_pair_sets(args.corpus_dir, args.out, num_pairs=args.num_pairs,
                                            voice=args.voice, seed=args.seed)
  for name, n in info["sets"].items():
    print(f"{PROG}: {name}: {n} pairs -> {os.path.join(args.out, name + '.jsonl')}")
  print(f"{PROG}: spoken by flite voice {info['voice']} "
        f"({'held out of' if info['voice_held_out'] else 'ALSO USED IN'} the corpus's training "
        "voices)")
  return 0


def main(argv=None) -> int:
  argv = list(sys.argv[1:] if argv is None else argv)
  logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
  from absl import logging as absl_logging  # pylint: disable=import-outside-toplevel
  absl_logging.set_verbosity(absl_logging.ERROR)
  if argv and argv[0] == "build-pairwise":
    return build_pairwise(argv[1:])
  args = parse_args(argv)
  _check_inputs(args)
  inputs = load_inputs(args)
  if args.loss_task:
    from slm_jax import configuration  # pylint: disable=import-outside-toplevel
    import slm_jax.tasks  # noqa: F401  pylint: disable=import-outside-toplevel,unused-import
    configuration.parse([], args.gin_param, finalize=False)
  from slm_jax.inference.session import Session  # pylint: disable=import-outside-toplevel
  cm = (contextlib.nullcontext(Session.load(args.checkpoint)) if args.checkpoint
        else Session.from_workdir(args.workdir, step=args.step))
  with cm as session:
    session = with_tokenizers(session, args.text_tokenizer, args.speech_tokenizer)
    _require_tokenizers(session, args)
    evaluate(session, args, inputs)
  return 0


def run() -> None:
  sys.exit(cli_errors.run_main(PROG, main))


if __name__ == "__main__":
  run()
