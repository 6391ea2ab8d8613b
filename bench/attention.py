"""Attention implementations side by side: ours (`pallas`) vs the XLA reference and xla_blockwise
(+ cuDNN on GPU, splash on TPU), forward and forward+backward, for a few shapes. One run, one table.

  python bench/attention.py                       # shapes for the backend (CPU: small, interpret)
  python bench/attention.py --tokens 2048,8192 --dtype bfloat16 --repeats 5

Masks: `causal` one document per row; `packed` documents of random length (mean tokens / 4) with
a padded tail; `cross` queries over a key stream twice as long, interleaved orders (no causal
promise: splash and cuDNN cannot run it). Times are the best of --repeats after a warm-up run
(compilation excluded); TFLOP/s counts the useful (unmasked) pairs, 4 E flops each forward and
10 E forward+backward. On CPU our kernel runs in the Pallas interpreter: its times say how slow the
interpreter is, nothing about TPU or GPU speed.
"""
from __future__ import annotations

import argparse
import datetime
import functools
import os
import platform
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")  # must precede the first jax import

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from slm_jax.kernels import dispatch, reference  # noqa: E402
from slm_jax.kernels.flash import KernelUnsupportedError  # noqa: E402

DEFAULT_TOKENS = {"cpu": "512,1024", "gpu": "2048,8192,32768", "tpu": "2048,8192,32768"}


def masks(kind, rng, b, l):
  """(q_seg, q_ord, kv_seg, kv_ord, key length) of one mask kind."""
  if kind == "cross":
    s = 2 * l
    q_ord, k_ord = np.zeros((b, l), np.int32), np.zeros((b, s), np.int32)
    for r in range(b):
      merged = rng.permutation(l + s)
      q_ord[r], k_ord[r] = np.sort(merged[:l]), np.sort(merged[l:])
    return np.ones((b, l), np.int32), q_ord, np.ones((b, s), np.int32), k_ord, s
  seg, pos = np.ones((b, l), np.int32), np.tile(np.arange(l, dtype=np.int32), (b, 1))
  if kind == "packed":
    for r in range(b):
      i, d, used = 0, 1, l - int(rng.integers(0, l // 8))
      while i < used:
        n = min(int(rng.integers(l // 8, l // 2)), used - i)
        seg[r, i:i + n], pos[r, i:i + n] = d, np.arange(n)
        i, d = i + n, d + 1
      seg[r, used:], pos[r, used:] = 0, 0
  return seg, pos, seg, pos, l


def useful_pairs(q_seg, q_ord, kv_seg, kv_ord):
  return int(np.asarray(reference.segment_order_mask(q_seg, q_ord, kv_seg, kv_ord)).sum())


def best_time(fn, args, repeats):
  jax.block_until_ready(fn(*args))
  best = float("inf")
  for _ in range(repeats):
    t = time.perf_counter()
    jax.block_until_ready(fn(*args))
    best = min(best, time.perf_counter() - t)
  return best


def main():
  backend = jax.default_backend()
  p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
  p.add_argument("--tokens", default=DEFAULT_TOKENS.get(backend, "512"),
                 help="comma-separated tokens per row")
  p.add_argument("--batch", type=int, default=1)
  p.add_argument("--heads", type=int, default=8)
  p.add_argument("--kv_heads", type=int, default=2)
  p.add_argument("--head_dim", type=int, default=64 if backend == "cpu" else 128)
  p.add_argument("--dtype", default="float32" if backend == "cpu" else "bfloat16")
  p.add_argument("--masks", default="causal,packed,cross")
  p.add_argument("--repeats", type=int, default=3)
  args = p.parse_args()
  impls = ["xla", "xla_blockwise", "pallas"] + {"gpu": ["cudnn"], "tpu": ["splash"]}.get(backend, [])
  print(f"# attention, {datetime.date.today()}, {platform.node()} {platform.processor()}, "
        f"jax {jax.__version__} on {backend} ({jax.devices()[0].device_kind}), "
        f"{os.cpu_count()} cpus; B={args.batch} H={args.heads} G={args.kv_heads} "
        f"E={args.head_dim} {args.dtype}")
  print(f"{'mask':7} {'L':>6} {'S':>6} {'impl':14} {'fwd ms':>10} {'fwd TF/s':>9} "
        f"{'fwd+bwd ms':>11} {'f+b TF/s':>9}", flush=True)
  rng = np.random.default_rng(0)
  dtype = jnp.dtype(args.dtype)
  for l in (int(t) for t in args.tokens.split(",")):
    for kind in args.masks.split(","):
      q_seg, q_ord, kv_seg, kv_ord, s = masks(kind, rng, args.batch, l)
      ids = tuple(jnp.asarray(x) for x in (q_seg, q_ord, kv_seg, kv_ord))
      pairs = useful_pairs(*ids) * args.heads
      key = jax.random.split(jax.random.key(l), 3)
      q = jax.random.normal(key[0], (args.batch, l, args.heads, args.head_dim), dtype)
      k = jax.random.normal(key[1], (args.batch, s, args.kv_heads, args.head_dim), dtype)
      v = jax.random.normal(key[2], (args.batch, s, args.kv_heads, args.head_dim), dtype)
      w = jax.random.normal(key[0], q.shape, dtype)
      for impl in impls:
        attn = functools.partial(dispatch.attention, implementation=impl, causal=kind != "cross")
        fwd = jax.jit(lambda q, k, v, attn=attn: attn(q, k, v, *ids))
        fwd_bwd = jax.jit(jax.grad(
            lambda q, k, v, attn=attn: jnp.sum((attn(q, k, v, *ids) * w).astype(jnp.float32)),
            argnums=(0, 1, 2)))
        try:
          t_f = best_time(fwd, (q, k, v), args.repeats)
          t_fb = best_time(fwd_bwd, (q, k, v), args.repeats)
        except KernelUnsupportedError:
          print(f"{kind:7} {l:6d} {s:6d} {impl:14} {'(not its case)':>10}", flush=True)
          continue
        tf = lambda flops, t: flops / t / 1e12
        print(f"{kind:7} {l:6d} {s:6d} {impl:14} {t_f * 1e3:10.2f} "
              f"{tf(4 * args.head_dim * pairs, t_f):9.3f} {t_fb * 1e3:11.2f} "
              f"{tf(10 * args.head_dim * pairs, t_fb):9.3f}", flush=True)


if __name__ == "__main__":
  main()
