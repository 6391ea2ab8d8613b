"""Train-step throughput and MFU of the demo model: slm_jax vs PyTorch (transformers), in one run.

  python bench/train_step.py                      # everything (about 10 minutes on 2 cores)
  python bench/train_step.py --skip_torch --skip_compile --skip_memory --steps 5

Prints: machine info; the measured float32 matmul peak (jitted 2048^3 matmul); slm_jax tokens/s
and MFU of the train step; the same model, batch and precision trained by PyTorch through
transformers' LlamaForCausalLM (sdpa, torch.optim.AdamW) and the ratio; compile time against
depth (scan vs unrolled); peak memory per remat policy (compiled.memory_analysis()).

Model FLOPs per token: `slm_jax.train.metrics.model_flops_per_token` (printed with its formula),
the same definition the train loop's MFU uses.
"""
from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time

import numpy as np

# Must precede the first jax import.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402

from slm_jax import configuration  # noqa: E402
from slm_jax.kernels import dispatch  # noqa: E402
from slm_jax.models import build as build_lib  # noqa: E402
from slm_jax.models import loss as loss_lib  # noqa: E402
from slm_jax.train import metrics as metrics_lib  # noqa: E402
from slm_jax.train.loop import TrainRun  # noqa: E402


# -- machine and peak -----------------------------------------------------------------------------
def machine_info() -> str:
  cpu = platform.processor() or "?"
  try:
    with open("/proc/cpuinfo") as f:
      cpu = next(l.split(":", 1)[1].strip() for l in f if l.startswith("model name"))
  except (OSError, StopIteration):
    pass
  try:
    mem_gib = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
  except (ValueError, OSError):
    mem_gib = float("nan")
  load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
  return (f"machine: {cpu}, {os.cpu_count()} cores, {mem_gib:.0f} GiB, load(1m) {load:.2f}\n"
          f"python {platform.python_version()}, jax {jax.__version__} ({jax.default_backend()}, "
          f"{jax.device_count()} device(s)), XLA_FLAGS={os.environ.get('XLA_FLAGS', '')!r}")


def time_fn(fn, repeats: int) -> list[float]:
  """Wall seconds of `fn()` (which must block) over `repeats` calls."""
  out = []
  for _ in range(repeats):
    t0 = time.perf_counter()
    fn()
    out.append(time.perf_counter() - t0)
  return out


def summary(times: list[float]) -> str:
  med = statistics.median(times)
  return f"median {med * 1e3:.1f} ms, min {min(times) * 1e3:.1f}, max {max(times) * 1e3:.1f} (n={len(times)})"


def matmul_peak() -> float:
  """GFLOP/s of a jitted 2048^3 float32 matmul, best of 10 (the train loop's MFU uses the same)."""
  return metrics_lib.measured_matmul_peak() / 1e9


# -- slm_jax --------------------------------------------------------------------------------------
def make_batch(cfg, batch: int, seq: int, seed: int = 0) -> dict:
  """One document per row (as in the PyTorch peer): segment 1 everywhere, positions 0..L-1."""
  rng = np.random.default_rng(seed)
  ids = rng.integers(cfg.vocab.text_start, cfg.vocab.size, size=(batch, seq + 1)).astype(np.int32)
  return {
      "tokens": jnp.asarray(ids[:, :-1]),
      "targets": jnp.asarray(ids[:, 1:]),
      "segment_ids": jnp.ones((batch, seq), jnp.int32),
      "positions": jnp.broadcast_to(jnp.arange(seq, dtype=jnp.int32), (batch, seq)),
      "loss_weights": jnp.ones((batch, seq), jnp.float32),
  }


def minimal_step(cfg, learning_rate: float = 1e-4):
  """(state, step_fn): nnx.split once, value_and_grad of lm_loss, optax.adamw; donated state."""
  import optax  # pylint: disable=import-outside-toplevel
  from flax import nnx  # pylint: disable=import-outside-toplevel

  model = build_lib.build(cfg)
  graphdef, params = nnx.split(model, nnx.Param)
  tx = optax.adamw(learning_rate, weight_decay=0.01)
  opt_state = tx.init(params)
  options = loss_lib.LossOptions()

  def loss_fn(p, batch):
    return loss_lib.lm_loss(nnx.merge(graphdef, p), batch, options)

  def step(state, batch):
    p, o = state
    (loss, _), grads = jax.value_and_grad(loss_fn, has_aux=True)(p, batch)
    updates, o = tx.update(grads, o, p)
    return (optax.apply_updates(p, updates), o), loss

  return (params, opt_state), jax.jit(step, donate_argnums=0)


def project_step(cfg):
  """(state, step) of the real train step (slm_jax.train: TrainRun, clipped AdamW, NaN guard)."""
  run = TrainRun(cfg)
  return run.init_state(), run.train_step


def bench_jax(cfg, batch: int, seq: int, steps: int, repeats: int, minimal: bool = False):
  which = ("minimal step (nnx.split, lm_loss, optax.adamw)" if minimal
           else "slm_jax.train TrainRun.train_step")
  state, step = minimal_step(cfg) if minimal else project_step(cfg)
  data = make_batch(cfg, batch, seq)
  t0 = time.perf_counter()
  state, out = step(state, data)
  jax.block_until_ready(out)
  first_s = time.perf_counter() - t0
  state, out = step(state, data)
  jax.block_until_ready(out)

  def run():
    nonlocal state, out
    for _ in range(steps):
      state, out = step(state, data)
    jax.block_until_ready(out)

  times = [t / steps for t in time_fn(run, repeats)]
  loss = out["loss"] if isinstance(out, dict) else out
  return which, first_s, times, float(loss)


# -- PyTorch peer ---------------------------------------------------------------------------------
def bench_torch(cfg, batch: int, seq: int, steps: int, repeats: int):
  import torch  # pylint: disable=import-outside-toplevel
  import transformers  # pylint: disable=import-outside-toplevel

  torch.manual_seed(0)
  hf_cfg = transformers.LlamaConfig(
      vocab_size=cfg.padded_vocab_size, hidden_size=cfg.embed_dim, intermediate_size=cfg.mlp_dim,
      num_hidden_layers=cfg.num_layers, num_attention_heads=cfg.num_heads,
      num_key_value_heads=cfg.num_kv_heads, head_dim=cfg.head_dim, rope_theta=cfg.rope_theta,
      rms_norm_eps=cfg.norm_eps, tie_word_embeddings=cfg.tie_embeddings,
      max_position_embeddings=max(seq, 2048), attn_implementation="sdpa", torch_dtype=torch.float32)
  model = transformers.LlamaForCausalLM(hf_cfg).train()
  opt = torch.optim.AdamW(model.parameters(), lr=1e-4, weight_decay=0.01)
  ids = torch.randint(cfg.vocab.text_start, cfg.vocab.size, (batch, seq + 1))
  inputs, labels = ids[:, :-1].contiguous(), ids[:, :-1].contiguous()

  def one():
    opt.zero_grad(set_to_none=True)
    out = model(input_ids=inputs, labels=labels)
    out.loss.backward()
    opt.step()
    return out.loss

  for _ in range(2):
    one()
  times = [t / steps for t in time_fn(lambda: [one() for _ in range(steps)], repeats)]
  return torch.__version__, transformers.__version__, torch.get_num_threads(), times


# -- compile time and memory ----------------------------------------------------------------------
def compile_seconds(cfg, batch: int, seq: int) -> tuple[float, float]:
  """(trace + lower seconds, XLA compile seconds) of the minimal step."""
  state, step = minimal_step(cfg)
  data = make_batch(cfg, batch, seq)
  t0 = time.perf_counter()
  lowered = step.lower(state, data)
  t1 = time.perf_counter()
  lowered.compile()
  return t1 - t0, time.perf_counter() - t1


def memory_of(cfg, batch: int, seq: int) -> dict:
  state, step = minimal_step(cfg)
  mem = step.lower(state, make_batch(cfg, batch, seq)).compile().memory_analysis()
  if mem is None:
    return {}
  return {k: getattr(mem, k, 0) for k in ("temp_size_in_bytes", "argument_size_in_bytes",
                                          "output_size_in_bytes", "alias_size_in_bytes")}


# -- main -----------------------------------------------------------------------------------------
def parse_args(argv=None):
  p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("--gin_file", action="append", default=None, help="default: models/demo_14m.gin")
  p.add_argument("--gin_param", action="append", default=[])
  p.add_argument("--batch", type=int, default=8)
  p.add_argument("--seq", type=int, default=512)
  p.add_argument("--steps", type=int, default=3, help="steps per timed repeat")
  p.add_argument("--repeats", type=int, default=5, help="timed repeats (median reported)")
  p.add_argument("--minimal_step", action="store_true",
                 help="benchmark a minimal step instead of slm_jax.train's TrainRun.train_step")
  p.add_argument("--skip_torch", action="store_true")
  p.add_argument("--skip_compile", action="store_true")
  p.add_argument("--skip_memory", action="store_true")
  p.add_argument("--depths", default="2,4,8,16")
  p.add_argument("--remat_policies", default="none,save_dots,full")
  return p.parse_args(argv)


def main(argv=None):
  args = parse_args(argv)
  configuration.parse(args.gin_file or ["models/demo_14m.gin"], args.gin_param)
  cfg = build_lib.config_from_gin()
  tokens = args.batch * args.seq
  print(machine_info())
  print(f"model: {build_lib.param_count(build_lib.build_abstract(cfg)) / 1e6:.2f}M params, "
        f"layers {cfg.num_layers}, D {cfg.embed_dim}, heads {cfg.num_heads}/{cfg.num_kv_heads}x"
        f"{cfg.head_dim}, MLP {cfg.mlp_dim}, vocab {cfg.vocab.size} padded to {cfg.padded_vocab_size}, "
        f"{cfg.dtype}, scan={cfg.scan_layers}, remat={cfg.remat_policy}, "
        f"attention={cfg.attention_impl} ({dispatch.resolve(cfg.attention_impl)}); "
        f"batch {args.batch} x {args.seq}")
  flops_tok, formula = metrics_lib.model_flops_per_token(cfg, args.seq)
  print(f"model FLOPs: {formula}")
  peak = matmul_peak() * 1e9
  print(f"matmul peak (jit 2048^3 float32, best of 10): {peak / 1e9:.1f} GFLOP/s")
  sys.stdout.flush()

  which, compile_s, times, loss = bench_jax(cfg, args.batch, args.seq, args.steps, args.repeats,
                                            minimal=args.minimal_step)
  step_s = statistics.median(times)
  jax_tps = tokens / step_s
  print(f"slm_jax [{which}] step: {summary(times)}; first call (compile + 1 step) "
        f"{compile_s:.1f} s; loss {loss:.3f}")
  print(f"slm_jax: {jax_tps:.0f} tokens/s, {flops_tok * jax_tps / 1e9:.1f} model-GFLOP/s, "
        f"MFU {flops_tok * jax_tps / peak:.1%} of the measured peak")
  sys.stdout.flush()

  if not args.skip_torch:
    tv, hv, threads, ttimes = bench_torch(cfg, args.batch, args.seq, args.steps, args.repeats)
    torch_tps = tokens / statistics.median(ttimes)
    print(f"pytorch {tv} / transformers {hv} ({threads} threads, LlamaForCausalLM sdpa, AdamW) "
          f"step: {summary(ttimes)}")
    print(f"pytorch: {torch_tps:.0f} tokens/s, {flops_tok * torch_tps / 1e9:.1f} model-GFLOP/s, "
          f"MFU {flops_tok * torch_tps / peak:.1%}")
    print(f"ratio slm_jax / pytorch: {jax_tps / torch_tps:.2f}x")
    sys.stdout.flush()

  if not args.skip_compile:
    print("compile time (s, minimal step; trace+lower / XLA compile) vs depth:")
    print(f"{'':30}layers         scan     unrolled")
    for depth in (int(x) for x in args.depths.split(",")):
      row = [compile_seconds(cfg.replace(num_layers=depth, scan_layers=s), args.batch, args.seq)
             for s in (True, False)]
      print(f"{'':30}{depth:>6} {row[0][0]:>5.1f} /{row[0][1]:>5.1f} {row[1][0]:>5.1f} /{row[1][1]:>5.1f}")
      sys.stdout.flush()

  if not args.skip_memory:
    print("memory per remat policy (minimal step, compiled.memory_analysis, MiB): "
          "policy  temp  arguments  output")
    for policy in args.remat_policies.split(","):
      m = memory_of(cfg.replace(remat_policy=policy), args.batch, args.seq)
      print(f"{'':40}{policy:>18} {m.get('temp_size_in_bytes', 0) / 2**20:>7.1f} "
            f"{m.get('argument_size_in_bytes', 0) / 2**20:>9.1f} {m.get('output_size_in_bytes', 0) / 2**20:>7.1f}")
      sys.stdout.flush()


if __name__ == "__main__":
  main()
