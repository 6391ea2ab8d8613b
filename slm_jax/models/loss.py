"""Weighted cross-entropy over the unified vocabulary and the extra speech channels.

The loss walks the flattened positions in chunks (scan + remat), so float32 logits exist for one
chunk at a time, never for the whole batch. Every reported quantity is a weighted *sum* together
with its weight, so microbatches, devices and hosts combine exactly; the scalar loss divides the
sums by denominators that `loss_denominators` computes from the whole (global) batch.

  loss = CE_main / W + z_loss_weight * Z / W + channel_loss_weight * mean_k(CE_k / W_speech)

with W the sum of loss_weights and W_speech the sum over positions whose target is speech.
"""
from __future__ import annotations

import gin
import jax
import jax.numpy as jnp

from slm_jax.data.unified_vocab import MODALITY_SPEECH, MODALITY_TEXT
from slm_jax.models.lm import SpeechTextLM


@gin.configurable
def loss_options(z_loss_weight: float = 0.0, channel_loss_weight: float = 1.0,
                 chunk_size: int = 1024, remat: bool = True) -> dict:
  """Loss options bound from gin (`loss_options.z_loss_weight = 1e-4`, ...).

  chunk_size / remat trade memory for speed: with remat each chunk's logits are recomputed in the
  backward pass (float32 logits of one chunk live at a time); without it they are kept (faster
  for small vocabularies, memory chunk_size x V per chunk for every chunk).
  """
  return dict(z_loss_weight=z_loss_weight, channel_loss_weight=channel_loss_weight,
              chunk_size=chunk_size, remat=remat)


def loss_denominators(batch, vocab) -> dict:
  """Denominators from a (global) batch: total weight and weight on speech targets."""
  w = batch["loss_weights"].astype(jnp.float32)
  speech = (vocab.modality(batch["targets"]) == MODALITY_SPEECH).astype(jnp.float32)
  return {"weight": jnp.maximum(w.sum(), 1e-8), "speech_weight": jnp.maximum((w * speech).sum(), 1e-8)}


def _chunk(x, n_chunks):
  return x.reshape((n_chunks, x.shape[0] // n_chunks) + x.shape[1:])


def loss_sums(model: SpeechTextLM, hidden_BLD, batch, *, chunk_size: int = 1024,
              remat: bool = True) -> dict:
  """Weighted sums of per-position losses, bucketed by target modality and speech channel."""
  cfg = model.cfg
  b, l, d = hidden_BLD.shape
  n = b * l
  chunk = min(chunk_size, n)
  while n % chunk:
    chunk -= 1
  n_chunks = n // chunk
  k_extra = cfg.num_channels - 1

  xs = {
      "h": _chunk(hidden_BLD.reshape(n, d), n_chunks),
      "t": _chunk(batch["targets"].reshape(n), n_chunks),
      "w": _chunk(batch["loss_weights"].reshape(n).astype(jnp.float32), n_chunks),
  }
  if k_extra:
    xs["tc"] = _chunk(batch["target_speech_codes"].reshape(n, k_extra), n_chunks)

  heads = model.heads

  def chunk_sums(c):
    logits_NV = heads.logits(c["h"])
    lse_N = jax.nn.logsumexp(logits_NV, axis=-1)
    target_logit_N = jnp.take_along_axis(logits_NV, c["t"][:, None], axis=-1)[:, 0]
    ce_N, w_N = lse_N - target_logit_N, c["w"]
    modality_N = cfg.vocab.modality(c["t"])
    text_w, speech_w = w_N * (modality_N == MODALITY_TEXT), w_N * (modality_N == MODALITY_SPEECH)
    out = {
        "ce": (ce_N * w_N).sum(), "z": (jnp.square(lse_N) * w_N).sum(), "weight": w_N.sum(),
        "text_ce": (ce_N * text_w).sum(), "text_weight": text_w.sum(),
        "speech_ce": (ce_N * speech_w).sum(), "speech_weight": speech_w.sum(),
        "correct": ((jnp.argmax(logits_NV, -1) == c["t"]) * w_N).sum(),
    }
    if k_extra:
      ch_logits_NKC = heads.channel_logits(c["h"])
      ch_lse_NK = jax.nn.logsumexp(ch_logits_NKC, axis=-1)
      ch_target_NK = jnp.take_along_axis(ch_logits_NKC, c["tc"][..., None], axis=-1)[..., 0]
      out["channel_ce"] = ((ch_lse_NK - ch_target_NK) * speech_w[:, None]).sum(0)   # [K-1]
    return out

  if remat:
    chunk_sums = jax.checkpoint(chunk_sums)

  def body(carry, c):
    return jax.tree.map(jnp.add, carry, chunk_sums(c)), None

  init = jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype),
                      jax.eval_shape(chunk_sums, jax.tree.map(lambda x: x[0], xs)))
  sums, _ = jax.lax.scan(body, init, xs)
  return sums


def combine(sums: dict, denominators: dict, *, z_loss_weight: float = 0.0,
            channel_loss_weight: float = 1.0) -> jax.Array:
  """The scalar training loss from (possibly partial) sums and global denominators."""
  loss = sums["ce"] / denominators["weight"]
  if z_loss_weight:
    loss = loss + z_loss_weight * sums["z"] / denominators["weight"]
  if "channel_ce" in sums and channel_loss_weight:
    loss = loss + channel_loss_weight * jnp.mean(sums["channel_ce"]) / denominators["speech_weight"]
  return loss


def metrics_from_sums(sums: dict) -> dict:
  """Human-readable means (host side or in-graph) from accumulated sums."""
  def ratio(a, b):
    return a / jnp.maximum(b, 1e-8)
  out = {
      "loss/ce": ratio(sums["ce"], sums["weight"]),
      "loss/z": ratio(sums["z"], sums["weight"]),
      "loss/text_ce": ratio(sums["text_ce"], sums["text_weight"]),
      "loss/speech_ce": ratio(sums["speech_ce"], sums["speech_weight"]),
      "accuracy": ratio(sums["correct"], sums["weight"]),
      "tokens/weight": sums["weight"],
  }
  if "channel_ce" in sums:
    per_channel = ratio(sums["channel_ce"], sums["speech_weight"])
    out["loss/channel_ce_mean"] = per_channel.mean()
    for i in range(per_channel.shape[0]):
      out[f"loss/channel_{i + 1}_ce"] = per_channel[i]
  return out


def lm_loss(model: SpeechTextLM, batch, denominators: dict | None = None, *, z_loss_weight=0.0,
            channel_loss_weight=1.0, chunk_size=1024, remat=True):
  """(loss, sums) for a batch; denominators default to this batch's own."""
  hidden = model(batch["tokens"], batch["segment_ids"], batch["positions"], batch.get("speech_codes"))
  sums = loss_sums(model, hidden, batch, chunk_size=chunk_size, remat=remat)
  denominators = denominators if denominators is not None else loss_denominators(batch, model.cfg.vocab)
  return combine(sums, denominators, z_loss_weight=z_loss_weight,
                 channel_loss_weight=channel_loss_weight), sums
