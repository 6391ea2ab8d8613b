"""Throughput metrics (tokens/s, MFU) and metric writers (TensorBoard event files + console).

MFU = model FLOPs per step / (step time x peak FLOP/s of all devices); model FLOPs per token are
defined once, in `model_flops_per_token` (the train loop and bench/train_step.py both use it).
"""
from __future__ import annotations

import functools
import logging
import time

import gin
import jax
import jax.numpy as jnp

from slm_jax.models.config import ModelConfig

# Dense bf16 peak FLOP/s per device (per chip for TPUs, per GPU for NVIDIA SXM parts).
PEAK_FLOPS = {
    "tpu v4": 275e12, "tpu v5 lite": 197e12, "tpu v5e": 197e12, "tpu v5p": 459e12, "tpu v5": 459e12,
    "tpu v6 lite": 918e12, "tpu v6e": 918e12,
    "a100": 312e12, "h100": 989e12, "h200": 989e12,
}


def model_flops_per_token(cfg: ModelConfig, seq_len: int) -> tuple[float, str]:
  """Model FLOPs per trained token (forward + backward) and the formula, for MFU.

  6 x (matmul parameters of the blocks) + 6 x D x V_padded (unified head; the input embedding is a
  gather, not a matmul) + 6 x D x (K-1) x C_max (channel heads) + causal attention: QK^T and PV
  over the L/2 keys a query sees on average, 2 x 2 x H x E x L/2 forward, x3 with the backward.
  Norm scales and rotary embeddings are not counted.
  """
  d, h, g, e, f = cfg.embed_dim, cfg.num_heads, cfg.num_kv_heads, cfg.head_dim, cfg.mlp_dim
  layers = cfg.num_layers + cfg.text_tower_layers + cfg.speech_tower_layers
  block_matmul_params = layers * (d * (h + 2 * g) * e + h * e * d + 3 * d * f)
  extra = cfg.vocab.extra_codebook_sizes
  head_params = d * cfg.padded_vocab_size + (d * len(extra) * max(extra) if extra else 0)
  attention = 6 * layers * h * e * seq_len
  total = 6 * block_matmul_params + 6 * head_params + attention
  formula = (f"6 x blocks {block_matmul_params / 1e6:.2f}M + 6 x heads {head_params / 1e6:.2f}M + "
             f"causal attention 6 x {layers} layers x {h} x {e} x L {seq_len} "
             f"= {total / 1e6:.1f} MFLOP/token")
  return float(total), formula


@functools.cache
def measured_matmul_peak(n: int = 2048, dtype: str = "float32", repeats: int = 10) -> float:
  """FLOP/s of a jitted n^3 matmul on this host's first device: the best of `repeats` (cached).

  The best, not the median: on a shared machine a neighbour can halve any single timing, and a
  peak that is too low would overstate MFU.
  """
  device = jax.local_devices()[0]
  a = jax.device_put(jax.random.normal(jax.random.key(0), (n, n), dtype), device)
  b = jax.device_put(jax.random.normal(jax.random.key(1), (n, n), dtype), device)
  f = jax.jit(lambda x, y: x @ y)
  f(a, b).block_until_ready()
  best = float("inf")
  for _ in range(repeats):
    t0 = time.perf_counter()
    f(a, b).block_until_ready()
    best = min(best, time.perf_counter() - t0)
  return 2.0 * n ** 3 / best


@gin.configurable
def peak_flops(override_per_device: float | None = None) -> float:
  """Peak FLOP/s of all devices of the run (a table for TPU/GPU; measured for CPU)."""
  devices = jax.devices()
  if override_per_device:
    return override_per_device * len(devices)
  kind = devices[0].device_kind.lower()
  if devices[0].platform == "cpu":
    # All fake CPU devices of a process share the same cores: the peak is per host.
    return measured_matmul_peak() * jax.process_count()
  for name, flops in sorted(PEAK_FLOPS.items(), key=lambda kv: -len(kv[0])):
    if name in kind:
      return flops * len(devices)
  logging.warning("no peak FLOP/s known for device kind %r; MFU is not reported "
                  "(bind peak_flops.override_per_device)", kind)
  return 0.0


class MetricWriter:
  """Scalars to TensorBoard event files (process 0 only)."""

  def __init__(self, logdir: str | None):
    self.writer = None
    if logdir and jax.process_index() == 0:
      from tensorboardX import SummaryWriter  # pylint: disable=import-outside-toplevel
      self.writer = SummaryWriter(logdir, flush_secs=10)

  def write(self, step: int, scalars: dict, prefix: str = "") -> None:
    if self.writer is None:
      return
    for k, v in scalars.items():
      self.writer.add_scalar(prefix + k, float(v), step)

  def flush(self) -> None:
    if self.writer is not None:
      self.writer.flush()

  def close(self) -> None:
    if self.writer is not None:
      self.writer.close()


def console_line(metrics: dict) -> str:
  keys = ("loss", "loss/text_ce", "loss/speech_ce", "accuracy", "grad_norm", "learning_rate",
          "tokens_per_s", "mfu")
  short = {"loss/text_ce": "text", "loss/speech_ce": "speech", "accuracy": "acc", "grad_norm": "gnorm",
           "learning_rate": "lr", "tokens_per_s": "tok/s"}
  out = []
  for k in keys:
    if k in metrics:
      v = float(metrics[k])
      out.append(f"{short.get(k, k)}={v:.3g}" if k != "tokens_per_s" else f"tok/s={v:.0f}")
  return " ".join(out)
