"""`slm-data fit-kmeans`: fit k-means speech units on a folder of audio."""
from __future__ import annotations

import argparse
import glob


def add_parser(subparsers) -> argparse.ArgumentParser:
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
  p.set_defaults(func=_run)
  return p


def _run(args) -> int:
  # pylint: disable=import-outside-toplevel
  import tqdm
  from slm_jax.data.audio import BadExamplePolicy, read_audio
  from slm_jax.data.speech.kmeans import fit_kmeans_tokenizer
  from slm_jax.data.speech.mel import MelConfig
  paths = sorted({p for g in args.audio_glob for p in glob.glob(g, recursive=True)})
  if args.max_files:
    paths = paths[:args.max_files]
  if not paths:
    raise SystemExit(f"fit-kmeans: no files match {args.audio_glob}")
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
