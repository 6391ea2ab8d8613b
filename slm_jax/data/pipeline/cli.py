"""`slm-data cache` and `slm-data inspect` (registered by slm_jax/tools/data.py via add_parser).

  slm-data [--gin_file models/demo.gin] cache --task NAME --out DIR [--split train] [--shards N]
  slm-data inspect --cache DIR [--seq_len 256] [--rows 2]

`cache` takes the unified vocabulary from `--vocab_spec` (a vocab_spec.json or its folder) or
else from gin (`UnifiedVocab` as bound by the gin files). A Mixture name caches every component
task into OUT/<task> and writes OUT/mixture.json with the rates to pass to the grain pipeline.
"""
from __future__ import annotations

import importlib
import json
import os

import numpy as np

from slm_jax.unified_vocab import MODALITY_SPEECH, MODALITY_TEXT, UnifiedVocab

MIXTURE_FILENAME = "mixture.json"


def _examples(task, split: str):
  ds = task.get_dataset(sequence_length=None, split=split, shuffle=False, num_epochs=1)
  for ex in ds.as_numpy_iterator():
    yield {k: ex[k] for k in ("tokens", "loss_mask", "speech_codes") if k in ex}


def cache_task(name: str, out: str, vocab: UnifiedVocab, split: str = "train", shards: int = 1,
               overwrite: bool = False, progress: bool = True) -> list:
  """Caches a seqio Task (or each Task of a Mixture) and returns the CacheInfo(s)."""
  import seqio  # pylint: disable=import-outside-toplevel
  from slm_jax.data.pipeline import cache  # pylint: disable=import-outside-toplevel
  provider = seqio.get_mixture_or_task(name)
  if isinstance(provider, seqio.Mixture):
    infos, rates = [], {}
    for task in provider.tasks:
      infos.append(cache.write_cache(_examples(task, split), os.path.join(out, task.name), vocab,
                                     task=task.name, split=split, num_shards=shards,
                                     overwrite=overwrite, progress=progress))
      rates[task.name] = float(provider.get_rate(task))
    with open(os.path.join(out, MIXTURE_FILENAME), "w") as f:
      json.dump({"mixture": name, "split": split, "rates": rates}, f, indent=2)
    return infos
  return [cache.write_cache(_examples(provider, split), out, vocab, task=name, split=split,
                            num_shards=shards, overwrite=overwrite, progress=progress)]


def _cmd_cache(args) -> int:
  for module in args.module:
    importlib.import_module(module)
  vocab = UnifiedVocab.load(args.vocab_spec) if args.vocab_spec else UnifiedVocab()
  infos = cache_task(args.task, args.out, vocab, args.split, args.shards, args.overwrite,
                     progress=not args.quiet)
  for info in infos:
    print(f"cached {info.task}/{info.split}: {info.num_examples} examples, {info.num_tokens} tokens, "
          f"K={info.num_channels} -> {info.directory}")
  return 0


def describe_row(row: dict, vocab: UnifiedVocab, max_run: int = 12) -> list[str]:
  """One line per packed document: runs of specials / text / speech ids; '*' marks trained runs."""
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


def _cmd_inspect(args) -> int:
  from slm_jax.data.pipeline import cache, grain_pipeline  # pylint: disable=import-outside-toplevel
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


def add_parser(subparsers) -> None:
  """Adds `cache` and `inspect` to an argparse subparsers object (slm_jax/tools/data.py)."""
  p = subparsers.add_parser("cache", help="materialize a seqio task's examples to ArrayRecord",
                            description=__doc__, formatter_class=_raw())
  p.add_argument("--task", required=True, help="registered seqio Task or Mixture name")
  p.add_argument("--out", required=True, help="cache directory (created atomically)")
  p.add_argument("--split", default="train")
  p.add_argument("--shards", type=int, default=1, help="number of ArrayRecord files")
  p.add_argument("--vocab_spec", default=None, help="vocab_spec.json (default: gin UnifiedVocab)")
  p.add_argument("--module", action="append", default=["slm_jax.tasks"],
                 help="module(s) to import to register tasks (default slm_jax.tasks)")
  p.add_argument("--overwrite", action="store_true", help="replace an existing cache")
  p.add_argument("--quiet", action="store_true", help="no progress bar")
  p.set_defaults(func=_cmd_cache)
  q = subparsers.add_parser("inspect", help="print packed rows of a cache, decoded by modality")
  q.add_argument("--cache", required=True, help="cache directory")
  q.add_argument("--seq_len", type=int, default=256)
  q.add_argument("--rows", type=int, default=2)
  q.set_defaults(func=_cmd_inspect)


def _raw():
  import argparse  # pylint: disable=import-outside-toplevel
  return argparse.RawDescriptionHelpFormatter
