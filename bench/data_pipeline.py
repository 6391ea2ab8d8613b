"""Data-pipeline throughput against the demo model's train-step consumption, in one run.

  python bench/data_pipeline.py                       # everything (a few minutes on 2 cores)
  python bench/data_pipeline.py --cache DIR [--cache DIR2]   # measure on real caches
  python bench/data_pipeline.py --train_tokens_per_s 600     # skip timing the train step

Prints, on this machine:
  1. packed tokens/s of the grain pipeline (caches -> shuffle -> mix -> pack -> batch 8 x 512),
     from the given caches, else from synthetic contract-3 records of realistic length
     (log-normal around 150 ids: a few seconds of 25 Hz units plus the transcript);
     the same records through the seqio / tf.data path for comparison;
  2. the demo model's train-step consumption (tokens/s of a jitted step at batch 8 x 512, from
     bench/train_step.py) and the ratio (target >= 10x: data never stalls training);
  3. dMel and k-means tokenization speed as a multiple of real time on one core (target >= 100x).
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from slm_jax.data import cache  # noqa: E402
from slm_jax.data.pipeline import grain_pipeline  # noqa: E402
from slm_jax.data.synthetic import synthetic_examples, synthetic_speechlike  # noqa: E402
from slm_jax.unified_vocab import UnifiedVocab  # noqa: E402


def demo_vocab() -> UnifiedVocab:
  return UnifiedVocab(text_size=4096, speech_codebook_sizes=(512,))  # configs/models/demo_14m.gin


def synthetic_caches(root: str, vocab: UnifiedVocab, num: int, mean_len: int) -> list[str]:
  dirs = []
  for i, name in enumerate(("synthetic_a", "synthetic_b")):
    d = os.path.join(root, name)
    cache.write_cache(synthetic_examples(vocab, num, mean_len=mean_len, seed=i), d, vocab,
                      task=name, num_shards=4, total=num)
    dirs.append(d)
  return dirs


def time_batches(it, batches: int) -> tuple[float, float, float]:
  """(real tokens/s, positions/s, fill fraction) over `batches` batches after one warm-up."""
  next(it)
  real = total = 0
  t0 = time.perf_counter()
  for _ in range(batches):
    b = next(it)
    real += int((b["segment_ids"] > 0).sum())
    total += b["segment_ids"].size
  dt = time.perf_counter() - t0
  return real / dt, total / dt, real / total


def bench_grain(dirs, vocab, batch, seq, batches, repeats, prefetch):
  runs = []
  for r in range(repeats):
    it = grain_pipeline.make_grain_iterator(dirs, None, seq_len=seq, batch_size=batch, seed=r,
                                            vocab=vocab, prefetch=prefetch, process_index=0,
                                            process_count=1)
    runs.append(time_batches(it, batches))
  return max(runs)


def bench_tfdata(vocab, batch, seq, batches, num, mean_len):
  import tensorflow as tf  # pylint: disable=import-outside-toplevel
  from slm_jax.data.pipeline import seqio_pipeline  # pylint: disable=import-outside-toplevel
  exs = list(synthetic_examples(vocab, num, mean_len=mean_len, seed=0))
  ds = tf.data.Dataset.from_generator(lambda: iter(exs), output_signature={
      "tokens": tf.TensorSpec([None], tf.int32), "loss_mask": tf.TensorSpec([None], tf.float32)})
  ds = ds.cache().repeat().shuffle(1024, seed=0)
  ds = seqio_pipeline.pack_tf_dataset(ds, seq, 1).batch(batch, drop_remainder=True).prefetch(2)
  return time_batches(ds.as_numpy_iterator(), batches)


def train_tokens_per_s(batch, seq, steps, repeats):
  import train_step  # bench/train_step.py  pylint: disable=import-outside-toplevel
  from slm_jax import configuration  # pylint: disable=import-outside-toplevel
  from slm_jax.models import build as build_lib  # pylint: disable=import-outside-toplevel
  configuration.parse(["models/demo_14m.gin"], finalize=False)  # later imports add configurables
  cfg = build_lib.config_from_gin()
  which, compile_s, times, _ = train_step.bench_jax(cfg, batch, seq, steps, repeats)
  return batch * seq / statistics.median(times), which, compile_s


def benchmark_realtime_factor(tokenizer, seconds: float = 60.0, utterance_seconds: float = 5.0,
                              batch_size: int = 16, threads: int = 1, repeats: int = 3,
                              seed: int = 0) -> float:
  """Seconds of audio tokenized per second of wall time, using `threads` BLAS/FFT threads.

  Encodes `seconds` of synthetic audio in utterances of `utterance_seconds`, `batch_size` at a
  time (encode_batch), and returns the best of `repeats` runs: the real-time factor per core
  when threads == 1.
  """
  import threadpoolctl  # pylint: disable=import-outside-toplevel
  n = max(1, int(round(seconds / utterance_seconds)))
  audios = [synthetic_speechlike(utterance_seconds, tokenizer.sample_rate, seed + i)
            for i in range(n)]
  best = np.inf
  with threadpoolctl.threadpool_limits(threads):
    tokenizer.encode_batch(audios[:1], tokenizer.sample_rate)  # warm caches
    for _ in range(repeats):
      start = time.perf_counter()
      for s in range(0, n, batch_size):
        tokenizer.encode_batch(audios[s:s + batch_size], tokenizer.sample_rate)
      best = min(best, time.perf_counter() - start)
  return n * utterance_seconds / best


def tokenizer_speed(seconds: float):
  from slm_jax.data.speech.dmel import DMelTokenizer  # pylint: disable=import-outside-toplevel
  from slm_jax.data.speech.kmeans import KMeansTokenizer  # pylint: disable=import-outside-toplevel
  dmel = DMelTokenizer()
  # Speed does not depend on the centroid values: 512 random units over 80 log-mel bins.
  kmeans = KMeansTokenizer(np.random.default_rng(0).normal(size=(512, dmel.mel.n_mels)), rate=25.0)
  return {name: benchmark_realtime_factor(tok, seconds=seconds, threads=1)
          for name, tok in (("dMel (80 bins x 16 levels, 80 Hz)", dmel),
                            ("k-means (512 units, 25 Hz)", kmeans))}


def main(argv=None):
  p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("--cache", action="append", default=[], help="cache dir(s); default synthetic")
  p.add_argument("--batch", type=int, default=8)
  p.add_argument("--seq", type=int, default=512)
  p.add_argument("--batches", type=int, default=200, help="timed batches per repeat")
  p.add_argument("--repeats", type=int, default=3)
  p.add_argument("--prefetch", type=int, default=0, help="grain thread prefetch (batches)")
  p.add_argument("--num_examples", type=int, default=20000, help="synthetic records per cache")
  p.add_argument("--mean_len", type=int, default=150, help="synthetic record length (ids)")
  p.add_argument("--train_tokens_per_s", type=float, default=None,
                 help="train-step consumption; default: measure it (bench/train_step.py)")
  p.add_argument("--train_steps", type=int, default=2)
  p.add_argument("--skip_tfdata", action="store_true")
  p.add_argument("--skip_tokenizers", action="store_true")
  p.add_argument("--audio_seconds", type=float, default=60.0)
  args = p.parse_args(argv)
  from train_step import machine_info  # pylint: disable=import-outside-toplevel
  print(machine_info())
  print(f"batch {args.batch} x {args.seq}, date {time.strftime('%Y-%m-%d')}")

  with tempfile.TemporaryDirectory() as tmp:
    if args.cache:
      dirs, vocab = args.cache, UnifiedVocab.load(args.cache[0])
      source = f"caches {args.cache}"
    else:
      vocab = demo_vocab()
      dirs = synthetic_caches(tmp, vocab, args.num_examples, args.mean_len)
      source = (f"synthetic records (2 caches x {args.num_examples}, log-normal length around "
                f"{args.mean_len} ids, mixed by size)")
    real, total, fill = bench_grain(dirs, vocab, args.batch, args.seq, args.batches, args.repeats,
                                    args.prefetch)
    print(f"grain pipeline on {source}: {real:,.0f} packed tokens/s ({total:,.0f} positions/s, "
          f"rows {fill:.1%} filled; first-fit, 16 bins, best of {args.repeats})")
  sys.stdout.flush()
  if not args.skip_tfdata:
    treal, ttotal, tfill = bench_tfdata(vocab, args.batch, args.seq, args.batches,
                                        min(args.num_examples, 5000), args.mean_len)
    print(f"seqio/tf.data path, same kind of records: {treal:,.0f} packed tokens/s "
          f"(rows {tfill:.1%} filled; greedy packing)")
    sys.stdout.flush()

  if args.train_tokens_per_s:
    train_tps, which = args.train_tokens_per_s, "given by --train_tokens_per_s"
  else:
    train_tps, which, compile_s = train_tokens_per_s(args.batch, args.seq, args.train_steps, 2)
    which = f"{which}, compile {compile_s:.0f} s"
  print(f"demo train step consumes {train_tps:,.0f} tokens/s ({which})")
  print(f"grain pipeline / train step: {real / train_tps:.0f}x (target >= 10x)")
  sys.stdout.flush()

  if not args.skip_tokenizers:
    for name, rtf in tokenizer_speed(args.audio_seconds).items():
      print(f"{name}: {rtf:,.0f}x real time on 1 core (target >= 100x)")


if __name__ == "__main__":
  main()
