"""`slm-data train-spm`: train a sentencepiece model on a text corpus."""
from __future__ import annotations

import argparse


def add_parser(subparsers) -> argparse.ArgumentParser:
  p = subparsers.add_parser(
      "train-spm", help="train a sentencepiece model on a text file (one sentence per line)",
      description="Trains a sentencepiece model (ids 0/1/2 = pad/eos/unk, no BOS) and prints its "
                  "identity string (UnifiedVocab.text_vocab_name).")
  p.add_argument("--input", required=True, nargs="+", help="text file(s), one sentence per line")
  p.add_argument("--vocab_size", required=True, type=int)
  p.add_argument("--out", required=True, help="output prefix: writes PREFIX.model and PREFIX.vocab")
  p.add_argument("--model_type", default="unigram", choices=["unigram", "bpe", "char", "word"])
  p.add_argument("--character_coverage", type=float, default=1.0)
  p.set_defaults(func=_run)
  return p


def _run(args) -> int:
  from slm_jax.data.text.sentencepiece_vocab import SentencePieceVocab, train_sentencepiece  # pylint: disable=import-outside-toplevel
  model = train_sentencepiece(args.input, args.vocab_size, args.out, model_type=args.model_type,
                              character_coverage=args.character_coverage)
  vocab = SentencePieceVocab(model)
  print(f"wrote {model}: {vocab.size} pieces, name {vocab.name}")
  return 0
