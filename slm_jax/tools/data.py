"""`slm-data`: the data commands, one per pipeline stage (docs/data_pipeline.md).

  slm-data build-demo --out DIR [--max_sentences N] [--voices_per_sentence K] [--workers 2]
  slm-data train-spm --input TEXT --vocab_size N --out PREFIX
  slm-data fit-kmeans --audio_glob 'DIR/audio/train/*.wav' --num_units 512 --rate 25 --out DIR
  slm-data [--gin_file models/demo_14m.gin --gin_file tasks/demo.gin] cache --task NAME --out DIR
           [--split train,validation --out 'DIR/{split}' --workers 2]
  slm-data inspect --cache DIR [--seq_len 256] [--rows 2]

`--gin_file` / `--gin_param` come before the command; a command imports the modules whose
configurables its bindings may name before they are parsed. Known errors (a missing Debian
package, a bad audio file, a vocabulary mismatch, ...) end in one `slm-data: error: ...` line and
exit code 2. Also runnable as `python -m slm_jax.tools.data`.
"""
from __future__ import annotations

import argparse
import functools
import glob
import importlib
import json
import sys

import numpy as np

from slm_jax.errors import SlmError
from slm_jax.tools import cli_errors

PROG = "slm-data"


# -- build-demo -------------------------------------------------------------------------------
def _build_demo(args) -> int:
  # pylint: disable=import-outside-toplevel
  from slm_jax.data.corpus import build, voices
  kwargs = {"max_sentences": args.max_sentences, "voices_per_sentence": args.voices_per_sentence,
            "seed": args.seed, "workers": args.workers, "include_real": not args.no_real,
            "progress": not args.quiet}
  if args.voices:
    kwargs["voices"] = args.voices.split(",")
    for spec in kwargs["voices"]:
      voices.parse_voice(spec)  # a bad spec fails before anything is written
  kwargs = {k: v for k, v in kwargs.items() if v is not None}
  info = build.build_demo_corpus(args.out, **kwargs)
  print(json.dumps({k: info[k] for k in ("utterances", "hours", "splits", "failures",
                                         "build_seconds")}, indent=1))
  print(f"demo corpus in {args.out} (details: {args.out}/build_info.json)")
  return 0


def _add_build_demo(subparsers) -> None:
  p = subparsers.add_parser(
      "build-demo", help="build the offline demo corpus (fortunes + flite/espeak-ng speech)",
      description="Synthesizes fortunes sentences with flite (mostly) and espeak-ng voices, "
      "with word timings, split by sentence into train/validation/test, plus real speech "
      "from pocketsphinx-testdata as test_real. Resumable: rerun to continue.")
  p.add_argument("--out", required=True, help="output folder")
  p.add_argument("--max_sentences", type=int, default=None,
                 help="number of fortunes sentences to synthesize (default 1500)")
  p.add_argument("--voices_per_sentence", type=int, default=None,
                 help="distinct voices per sentence (default 2)")
  p.add_argument("--voices", default=None,
                 help="comma-separated voice specs, e.g. 'flite:slt@3,espeak:en-us+f3:150:60' "
                 "(default: 4 flite voices weighted 3, 4 espeak-ng variants weighted 1)")
  p.add_argument("--seed", type=int, default=None, help="shuffle/voice seed (default 0)")
  p.add_argument("--workers", type=int, default=None, help="worker processes (default 2)")
  p.add_argument("--no_real", action="store_true", help="skip the test_real split")
  p.add_argument("--quiet", action="store_true", help="no progress bar")
  p.set_defaults(func=_build_demo, gin_modules=("slm_jax.data.corpus.build",))


# -- train-spm --------------------------------------------------------------------------------
def _train_spm(args) -> int:
  # pylint: disable=import-outside-toplevel
  from slm_jax.data.text.sentencepiece_vocab import SentencePieceVocab, train_sentencepiece
  model = train_sentencepiece(args.input, args.vocab_size, args.out, model_type=args.model_type,
                              character_coverage=args.character_coverage)
  vocab = SentencePieceVocab(model)
  print(f"wrote {model}: {vocab.size} pieces, name {vocab.name}")
  return 0


def _add_train_spm(subparsers) -> None:
  p = subparsers.add_parser(
      "train-spm", help="train a sentencepiece model on a text file (one sentence per line)",
      description="Trains a sentencepiece model (ids 0/1/2 = pad/eos/unk, no BOS) and prints its "
                  "identity string (UnifiedVocab.text_vocab_name).")
  p.add_argument("--input", required=True, nargs="+", help="text file(s), one sentence per line")
  p.add_argument("--vocab_size", required=True, type=int)
  p.add_argument("--out", required=True, help="output prefix: writes PREFIX.model and PREFIX.vocab")
  p.add_argument("--model_type", default="unigram", choices=["unigram", "bpe", "char", "word"])
  p.add_argument("--character_coverage", type=float, default=1.0)
  p.set_defaults(func=_train_spm, gin_modules=("slm_jax.data.text.sentencepiece_vocab",))


# -- fit-kmeans -------------------------------------------------------------------------------
def _fit_kmeans(args) -> int:
  # pylint: disable=import-outside-toplevel
  import tqdm
  from slm_jax.data.audio import BadExamplePolicy, read_audio
  from slm_jax.data.speech.kmeans import fit_kmeans_tokenizer
  from slm_jax.data.speech.mel import MelConfig
  paths = sorted({p for g in args.audio_glob for p in glob.glob(g, recursive=True)})
  if args.max_files:
    paths = paths[:args.max_files]
  if not paths:
    raise FileNotFoundError(f"fit-kmeans: no files match {args.audio_glob}")
  rate = MelConfig().sample_rate
  policy = BadExamplePolicy(args.on_bad_audio)
  audios = []
  for p in tqdm.tqdm(paths, desc="reading audio", unit="file"):
    a = policy.call(read_audio, p, rate, key=p)
    if a is not None:
      audios.append(a[0])
  print(f"audio: {policy.summary()}; {sum(len(a) for a in audios) / rate / 3600:.2f} h")
  tok = fit_kmeans_tokenizer(audios, rate, num_units=args.num_units, rate=args.rate,
                             context=args.context, seed=args.seed, dedup=args.dedup,
                             log_fn=lambda m: print(m, flush=True))
  path = tok.save(args.out)
  print(f"wrote {path}: {tok.name}")
  return 0


def _add_fit_kmeans(subparsers) -> None:
  p = subparsers.add_parser(
      "fit-kmeans", help="fit k-means speech units (K=1) on log-mel features of audio files",
      description="Fits k-means units on pooled log-mel features and saves speech_tokenizer.json + "
                  "centroids.npz to --out (load with get_speech_tokenizer('kmeans', DIR)).")
  p.add_argument("--audio_glob", required=True, nargs="+",
                 help="glob(s) of audio files, e.g. 'corpus/audio/train/*.wav' (quote it)")
  p.add_argument("--num_units", type=int, default=512)
  p.add_argument("--rate", type=float, default=25.0, help="unit frame rate in Hz")
  p.add_argument("--context", type=int, default=0, help="neighbour frames stacked on each side")
  p.add_argument("--seed", type=int, default=0)
  p.add_argument("--max_files", type=int, default=0, help="use at most this many files (0 = all)")
  p.add_argument("--dedup", action="store_true", help="collapse repeated consecutive units")
  p.add_argument("--on_bad_audio", default="skip", choices=["skip", "raise"])
  p.add_argument("--out", required=True, help="output directory")
  p.set_defaults(func=_fit_kmeans, gin_modules=("slm_jax.data.speech.kmeans",))


# -- cache ------------------------------------------------------------------------------------
class CacheArgsError(SlmError, ValueError):
  """`slm-data cache` flags that do not fit together."""


def _setup_cache_worker(modules: list[str], gin_files: list[str], gin_params: list[str]) -> None:
  """What `main` does before a command, in a spawned cache worker."""
  from slm_jax import configuration  # pylint: disable=import-outside-toplevel
  for module in modules:
    importlib.import_module(module)
  configuration.parse(gin_files, gin_params, finalize=False)


def _cache(args) -> int:
  # pylint: disable=import-outside-toplevel
  from slm_jax.data.cache.tasks import cache_splits
  from slm_jax.unified_vocab import UnifiedVocab
  splits = [s for s in args.split.split(",") if s]
  if not splits or (len(splits) > 1 and "{split}" not in args.out):
    raise CacheArgsError(f"--split {args.split!r} names {len(splits)} splits: give --out with "
                         "'{split}' in it (e.g. --out 'DIR/{split}'), one folder per split")
  if args.workers < 1:
    raise CacheArgsError(f"--workers must be >= 1, got {args.workers}")
  vocab = UnifiedVocab.load(args.vocab_spec) if args.vocab_spec else UnifiedVocab()
  setup = functools.partial(_setup_cache_worker, list(args.gin_modules) + list(args.module),
                            list(args.gin_file), list(args.gin_param))
  infos = cache_splits(args.task, {s: args.out.replace("{split}", s) for s in splits}, vocab,
                       args.shards, args.overwrite, progress=not args.quiet,
                       workers=args.workers, setup=setup)
  for info in infos:
    print(f"cached {info.task}/{info.split}: {info.num_examples} examples, {info.num_tokens} tokens, "
          f"K={info.num_channels} -> {info.directory}")
  return 0


def _add_cache(subparsers) -> None:
  p = subparsers.add_parser(
      "cache", help="materialize a seqio task's examples to ArrayRecord",
      formatter_class=argparse.RawDescriptionHelpFormatter,
      description="Caches a registered seqio Task (or every Task of a Mixture into OUT/<task>, "
      "with OUT/mixture.json holding the rates) as template outputs in ArrayRecord files.\n"
      "The unified vocabulary comes from --vocab_spec (a vocab_spec.json or its folder), or else "
      "from gin (UnifiedVocab as bound by the gin files).")
  p.add_argument("--task", required=True, help="registered seqio Task or Mixture name")
  p.add_argument("--out", required=True,
                 help="cache directory (created atomically); with several splits, a path with "
                 "'{split}' in it")
  p.add_argument("--split", default="train",
                 help="split, or comma-separated splits cached by one command (e.g. train,validation)")
  p.add_argument("--workers", type=int, default=1,
                 help="processes writing the component caches (one per task and split) side by side; "
                 "the files are the same for any number")
  p.add_argument("--shards", type=int, default=1, help="number of ArrayRecord files")
  p.add_argument("--vocab_spec", default=None, help="vocab_spec.json (default: gin UnifiedVocab)")
  p.add_argument("--module", action="append", default=["slm_jax.tasks"],
                 help="module(s) to import to register tasks (default slm_jax.tasks)")
  p.add_argument("--overwrite", action="store_true", help="replace an existing cache")
  p.add_argument("--quiet", action="store_true", help="no progress bar")
  p.set_defaults(func=_cache, gin_modules=())


# -- inspect ----------------------------------------------------------------------------------
def describe_row(row: dict, vocab, max_run: int = 12) -> list[str]:
  """One line per packed document: runs of specials / text / speech ids; '*' marks trained runs."""
  from slm_jax.unified_vocab import MODALITY_SPEECH, MODALITY_TEXT  # pylint: disable=import-outside-toplevel
  names = {vocab.special_id(s): s for s in ("<pad>", "<eos>", "<bos>") + tuple(vocab.specials)}
  lines = []
  for seg in sorted(set(row["segment_ids"].tolist()) - {0}):
    sel = row["segment_ids"] == seg
    ids = np.concatenate([row["tokens"][sel][:1], row["targets"][sel]])
    w = np.concatenate([[0.0], row["loss_weights"][sel]])
    mod = vocab.modality(ids)
    parts, i = [], 0
    while i < len(ids):
      j = i
      while j < len(ids) and mod[j] == mod[i] and (w[j] > 0) == (w[i] > 0) and mod[i] != 0:
        j += 1
      j = max(j, i + 1)
      run, star = ids[i:j], "*" if w[i] > 0 else ""
      if mod[i] == MODALITY_TEXT:
        shown = " ".join(map(str, vocab.unified_to_text(run[:max_run])))
        parts.append(f"{star}text[{len(run)}]({shown}{' ...' if len(run) > max_run else ''})")
      elif mod[i] == MODALITY_SPEECH:
        shown = " ".join(map(str, vocab.unified_to_speech(run[:max_run])))
        parts.append(f"{star}speech[{len(run)}]({shown}{' ...' if len(run) > max_run else ''})")
      else:
        parts.append(star + names.get(int(run[0]), f"<{int(run[0])}>"))
      i = j
    lines.append(f"  doc {seg} ({int(sel.sum())} positions): " + " ".join(parts))
  return lines


def _inspect(args) -> int:
  # pylint: disable=import-outside-toplevel
  from slm_jax.data import cache
  from slm_jax.data.pipeline import grain_pipeline
  from slm_jax.unified_vocab import UnifiedVocab
  info = cache.open_cache(args.cache)
  vocab = UnifiedVocab.load(args.cache)
  print(json.dumps(info.to_json(), indent=1))
  it = grain_pipeline.make_grain_eval_iterator([args.cache], seq_len=args.seq_len,
                                               batch_size=args.rows, vocab=vocab,
                                               process_index=0, process_count=1)
  batch = next(it)
  for r in range(args.rows):
    row = {k: v[r] for k, v in batch.items()}
    fill = float((row["segment_ids"] > 0).mean())
    print(f"row {r}: {len(set(row['segment_ids'].tolist()) - {0})} documents, {fill:.0%} filled")
    print("\n".join(describe_row(row, vocab)))
  return 0


def _add_inspect(subparsers) -> None:
  p = subparsers.add_parser("inspect", help="print packed rows of a cache, decoded by modality")
  p.add_argument("--cache", required=True, help="cache directory")
  p.add_argument("--seq_len", type=int, default=256)
  p.add_argument("--rows", type=int, default=2)
  p.set_defaults(func=_inspect, gin_modules=())


# -- entry point ------------------------------------------------------------------------------
def make_parser() -> argparse.ArgumentParser:
  parser = argparse.ArgumentParser(prog=PROG, description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--gin_file", action="append", default=[], help="gin file(s) to parse")
  parser.add_argument("--gin_param", action="append", default=[], help="gin binding(s)")
  subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
  for add in (_add_build_demo, _add_train_spm, _add_fit_kmeans, _add_cache, _add_inspect):
    add(subparsers)
  return parser


def main(argv=None) -> int:
  """Runs one command; known errors propagate (run() turns them into exit code 2)."""
  parser = make_parser()
  args = parser.parse_args(argv)
  if not getattr(args, "func", None):
    parser.print_help()
    return 2
  from slm_jax import configuration  # pylint: disable=import-outside-toplevel
  for module in args.gin_modules + tuple(getattr(args, "module", ())):
    importlib.import_module(module)
  # Not finalized: commands import more gin-configurable modules as they run. Nothing to parse,
  # nothing imported: build-demo then runs on requirements-corpus.txt alone (no JAX).
  if args.gin_file or args.gin_param:
    configuration.parse(args.gin_file, args.gin_param, finalize=False)
  return int(args.func(args) or 0)


def run() -> None:
  """Console-script entry point."""
  sys.exit(cli_errors.run_main(PROG, main))


if __name__ == "__main__":
  run()
