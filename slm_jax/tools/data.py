"""`slm-data`: data commands (build-demo, and the subcommands of the data stages).

  slm-data build-demo --out DIR [--max_sentences N] [--voices_per_sentence K] [--workers 2]
  slm-data <train-spm | fit-kmeans | cache | inspect> ...   (when those modules are installed)

Each stage module listed in `_SUBCOMMAND_MODULES` exposes `add_parser(subparsers)`; its parsers
set `func(args)`. A module that is not there yet is skipped and named in `--help`.
Also runnable as `python -m slm_jax.tools.data`.
"""
import argparse
import importlib
import json
import sys

from slm_jax import configuration
from slm_jax.data.corpus import build as corpus_build  # registers build_demo_corpus with gin

_SUBCOMMAND_MODULES = (
    "slm_jax.data.text.cli",  # train-spm
    "slm_jax.data.speech.cli",  # fit-kmeans
    "slm_jax.data.pipeline.cli",  # cache, inspect
)


def _build_demo(args) -> int:
  # pylint: disable=import-outside-toplevel
  from slm_jax.data.corpus import voices
  from slm_jax.data.corpus.fortunes import MissingPackageError
  kwargs = {"max_sentences": args.max_sentences, "voices_per_sentence": args.voices_per_sentence,
            "seed": args.seed, "workers": args.workers, "include_real": not args.no_real,
            "progress": not args.quiet}
  if args.voices:
    kwargs["voices"] = args.voices.split(",")
    try:
      for spec in kwargs["voices"]:
        voices.parse_voice(spec)
    except ValueError as e:
      raise SystemExit(f"slm-data build-demo: {e}") from e
  kwargs = {k: v for k, v in kwargs.items() if v is not None}
  try:
    info = corpus_build.build_demo_corpus(args.out, **kwargs)
  except MissingPackageError as e:
    raise SystemExit(f"slm-data build-demo: {e}") from e
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
  p.set_defaults(func=_build_demo)


def make_parser() -> argparse.ArgumentParser:
  parser = argparse.ArgumentParser(prog="slm-data", description="slm_jax data commands.")
  parser.add_argument("--gin_file", action="append", default=[], help="gin file(s) to parse")
  parser.add_argument("--gin_param", action="append", default=[], help="gin binding(s)")
  subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
  _add_build_demo(subparsers)
  notes = []
  for name in _SUBCOMMAND_MODULES:
    try:
      module = importlib.import_module(name)
    except ModuleNotFoundError as e:
      if e.name is None or not name.startswith(e.name):  # a dependency of it is missing
        notes.append(f"{name} (import failed: {e})")
      else:
        notes.append(f"{name} (not there yet)")
      continue
    except Exception as e:  # pylint: disable=broad-except  # a broken stage must not hide the rest
      notes.append(f"{name} (import failed: {type(e).__name__}: {e})")
      continue
    module.add_parser(subparsers)
  if notes:
    parser.epilog = "subcommands not available: " + "; ".join(notes)
  return parser


def main(argv=None) -> int:
  parser = make_parser()
  args = parser.parse_args(argv)
  if not getattr(args, "func", None):
    parser.print_help()
    return 2
  # Not finalized: subcommands import their gin-configurable modules lazily.
  try:
    configuration.parse(args.gin_file, args.gin_param, finalize=False)
  except configuration.ConfigError as e:
    print(f"slm-data: {e}", file=sys.stderr)
    return 2
  return int(args.func(args) or 0)


def run() -> None:
  """Console-script entry point."""
  sys.exit(main())


if __name__ == "__main__":
  run()
