"""The forward pass and loss: `lm_loss(model, batch, options)`, used by the train and eval steps.

Weighted cross-entropy over the unified vocabulary and the extra speech channels. The loss walks
the sequence in J strided chunks (scan + remat), keeping the batch axis whole, so float32 logits
exist for one chunk at a time, never for the whole batch, and a sharded batch is never gathered.
Every reported quantity is a weighted *sum* together with its weight, so microbatches, devices and
hosts combine exactly; the scalar loss divides the sums by denominators that `loss_denominators`
computes from the whole (global) batch.

  loss = CE_main / W + z_loss_weight * Z / W + channel_loss_weight * mean_k(CE_k / W_speech)

with W the sum of loss_weights and W_speech the sum over positions whose target is speech.
"""
from __future__ import annotations

import dataclasses
import math

import gin
import jax
import jax.numpy as jnp

from slm_jax.configuration import ConfigError
from slm_jax.models.ctc_spelling import CtcSpelling
from slm_jax.sharding import batch_shards
from slm_jax.unified_vocab import MODALITY_SPEECH, MODALITY_TEXT
from slm_jax.models.heads import predicted_frame
from slm_jax.models.lm import SpeechTextLM


@gin.configurable
@dataclasses.dataclass(frozen=True)
class LossOptions:
  """Loss options bound from gin (`LossOptions.z_loss_weight = 1e-4`, ...).

  chunk_size / remat trade memory for speed: with remat each chunk's logits are recomputed in the
  backward pass (float32 logits of one chunk live at a time); without it they are kept (faster
  for small vocabularies, memory chunk_size x V per chunk for every chunk).
  """
  z_loss_weight: float = 0.0
  channel_loss_weight: float = 1.0
  chunk_size: int = 1024
  remat: bool = True
  # > 0: add the auxiliary CTC loss of ASR examples (models/ctc.py; needs ModelConfig.asr_ctc),
  # summed over labels and divided by W like the cross-entropy.
  asr_ctc_weight: float = 0.0
  # Speech-channel heads ([D, K-1, C] per position: most of a dMel model's head work) evaluated
  # only at positions whose target is speech: at most this fraction of each loss chunk's positions
  # (per batch shard) is gathered; a chunk with more runs dense. The same loss either way
  # (`_channel_ce_sums`); None = always dense.
  channel_head_capacity: float | None = None
  # With ModelConfig.ctc_alphabet: each text id's characters (`@ctc_spelling()`,
  # models/ctc_spelling.py), the CTC loss's targets.
  ctc_spelling: CtcSpelling | None = None
  # Training only: each speech frame the model continues (a speech input whose target is speech
  # with loss weight, e.g. a TTS answer's frames) enters as a zero vector with this probability,
  # so the next frame must come from the text, not from copying the frame before it (Tacotron's
  # prenet dropout, per frame; `speech_history_drops`). 0 = off; evaluation never drops.
  speech_history_dropout: float = 0.0
  # The task tags whose examples the CTC loss reads (frames vs transcript); ("[ASR]",) leaves TTS
  # examples out, e.g. word-interleaved TTS, whose frames could copy the word just before them.
  ctc_tags: tuple = ("[ASR]", "[TTS]")

  def __post_init__(self):
    object.__setattr__(self, "ctc_tags", tuple(self.ctc_tags))
    if self.z_loss_weight < 0 or self.channel_loss_weight < 0 or self.asr_ctc_weight < 0:
      raise ConfigError(f"LossOptions: loss weights must be >= 0, got z_loss_weight="
                        f"{self.z_loss_weight}, channel_loss_weight={self.channel_loss_weight}")
    if not 0.0 <= self.speech_history_dropout < 1.0:
      raise ConfigError(f"LossOptions.speech_history_dropout={self.speech_history_dropout} must "
                        f"be in [0, 1) (the probability of hiding a continued speech frame)")
    if self.chunk_size < 1:
      raise ConfigError(f"LossOptions.chunk_size={self.chunk_size} must be >= 1")
    if self.channel_head_capacity is not None and not 0 < self.channel_head_capacity <= 1:
      raise ConfigError(f"LossOptions.channel_head_capacity={self.channel_head_capacity} must be "
                        f"in (0, 1] (a fraction of each loss chunk's positions), or None")


def loss_denominators(batch, vocab) -> dict:
  """Denominators from a (global) batch: total weight and weight on speech targets."""
  w = batch["loss_weights"].astype(jnp.float32)
  speech = (vocab.modality(batch["targets"]) == MODALITY_SPEECH).astype(jnp.float32)
  return {"weight": jnp.maximum(w.sum(), 1e-8), "speech_weight": jnp.maximum((w * speech).sum(), 1e-8)}


def _strided_chunks(x_BL, num_chunks):
  """[B, L, ...] -> [J, B, L / J, ...] for J = num_chunks; chunk j holds positions j, j + J, ...

  The batch axis stays whole and each chunk takes an equal, strided share of the sequence, so a
  batch sharded over data/fsdp (or a sequence sharded over `sequence`) is chunked in place, with
  no gather: every device computes the head and loss of its own positions only.
  """
  b, l = x_BL.shape[:2]
  x = x_BL.reshape((b, l // num_chunks, num_chunks) + x_BL.shape[2:])
  return jnp.moveaxis(x, 2, 0)


def _num_chunks(b: int, l: int, chunk_size: int) -> int:
  """Fewest chunks (a divisor of L) with at most max(chunk_size, B) positions each."""
  per_row = max(1, min(l, chunk_size // max(b, 1)))
  while l % per_row:
    per_row -= 1
  return l // per_row


def _dense_channel_ce(heads, h, target_frame_BLK, speech_w_BL):
  """Summed cross-entropy per speech channel [K-1], the heads evaluated at every position.

  target_frame: the predicted frame's K channels (channel 0's level, then the K-1 targets), which
  a sequential read-out is teacher-forced on."""
  logits_BLKC = heads.channel_logits(h, target_frame_BLK)
  target_codes_BLK = target_frame_BLK[..., 1:]
  lse_BLK = jax.nn.logsumexp(logits_BLKC, axis=-1)
  target_BLK = jnp.take_along_axis(logits_BLKC, target_codes_BLK[..., None], axis=-1)[..., 0]
  return ((lse_BLK - target_BLK) * speech_w_BL[..., None]).sum((0, 1))


def _channel_ce_sums(heads, h, target_frame_BLK, speech_w_BL, capacity: float | None):
  """`_dense_channel_ce`, with the heads evaluated only where speech_w > 0 when that fits.

  The chunk's rows split into G groups, one per shard of the batch axis (so every gather stays
  on its device); each group's positions with a weighted speech target are gathered into
  M = ceil(capacity x its positions) slots (unused slots weigh 0). When a group has more than M
  such positions the chunk runs dense instead (`lax.cond`), so no target is ever dropped.
  """
  if capacity is None:
    return _dense_channel_ce(heads, h, target_frame_BLK, speech_w_BL)
  b, l = speech_w_BL.shape
  groups = math.gcd(b, batch_shards())
  n = (b // groups) * l
  m = max(1, math.ceil(capacity * n))
  if m >= n:
    return _dense_channel_ce(heads, h, target_frame_BLK, speech_w_BL)

  def grouped(x):   # [B, L, ...] -> [G, N, ...], N = (B / G) x L positions of a group
    return x.reshape((groups, n) + x.shape[2:])

  w_GN = grouped(speech_w_BL)
  count_G = (w_GN > 0).sum(-1)

  def compact(_):
    idx_GM = jax.vmap(lambda mask: jnp.nonzero(mask, size=m, fill_value=0)[0])(w_GN > 0)
    take = lambda x: jnp.take_along_axis(   # noqa: E731
        x, idx_GM.reshape(idx_GM.shape + (1,) * (x.ndim - 2)), axis=1)
    used_GM = jnp.arange(m)[None, :] < count_G[:, None]
    w_GM = jnp.where(used_GM, take(w_GN), 0.0)
    return _dense_channel_ce(heads, jax.tree.map(lambda x: take(grouped(x)), h),
                             take(grouped(target_frame_BLK)), w_GM)

  def dense(_):
    return _dense_channel_ce(heads, h, target_frame_BLK, speech_w_BL)

  return jax.lax.cond(count_G.max() <= m, compact, dense, None)


def loss_sums(model: SpeechTextLM, hidden_BLD, batch, *, chunk_size: int = 1024,
              remat: bool = True, channel_head_capacity: float | None = None) -> dict:
  """Weighted sums of per-position losses, bucketed by target modality and speech channel."""
  cfg = model.cfg
  b, l = batch["targets"].shape
  num_chunks = _num_chunks(b, l, chunk_size)
  k_extra = cfg.num_channels - 1

  # xs: [J, B, L/J, ...]; in `chunk_sums` below, L is one chunk's L/J positions of each row.
  # The hidden states may be a pytree of [B, L, ...] leaves (Zipper: both towers' states), which
  # `model.heads` turns into logits position by position.
  xs = {
      "h": jax.tree.map(lambda h: _strided_chunks(h, num_chunks), hidden_BLD),
      "t": _strided_chunks(batch["targets"], num_chunks),
      "w": _strided_chunks(batch["loss_weights"].astype(jnp.float32), num_chunks),
  }
  if k_extra:
    xs["tc"] = _strided_chunks(batch["target_speech_codes"], num_chunks)

  heads = model.heads

  def chunk_sums(c):
    logits_BLV = heads.logits(c["h"])
    lse = jax.nn.logsumexp(logits_BLV, axis=-1)
    target_logit = jnp.take_along_axis(logits_BLV, c["t"][..., None], axis=-1)[..., 0]
    ce, w = lse - target_logit, c["w"]
    modality = cfg.vocab.modality(c["t"])
    text_w, speech_w = w * (modality == MODALITY_TEXT), w * (modality == MODALITY_SPEECH)
    out = {
        "ce": (ce * w).sum(), "z": (jnp.square(lse) * w).sum(), "weight": w.sum(),
        "text_ce": (ce * text_w).sum(), "text_weight": text_w.sum(),
        "speech_ce": (ce * speech_w).sum(), "speech_weight": speech_w.sum(),
        "correct": ((jnp.argmax(logits_BLV, -1) == c["t"]) * w).sum(),
    }
    if k_extra:   # [K-1]
      frame = predicted_frame(cfg.vocab, c["t"], c["tc"])
      out["channel_ce"] = _channel_ce_sums(heads, c["h"], frame, speech_w, channel_head_capacity)
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
  if "ctc" in sums:
    out["loss/asr_ctc"] = ratio(sums["ctc"], sums["ctc_labels"])
  if "channel_ce" in sums:
    per_channel = ratio(sums["channel_ce"], sums["speech_weight"])
    out["loss/channel_ce_mean"] = per_channel.mean()
    for i in range(per_channel.shape[0]):
      out[f"loss/channel_{i + 1}_ce"] = per_channel[i]
  return out


def speech_history_drops(batch, vocab, rate: float, rng) -> jax.Array:
  """bool[B, L]: the continued speech frames (speech input, speech target, loss weight > 0) that
  `LossOptions.speech_history_dropout` hides this step, each independently with `rate`.

  A speech prompt (an ASR example's audio: no loss weight) and the position that starts an answer
  (its input is a marker, not speech) are never hidden.
  """
  continued_BL = (vocab.is_speech(batch["tokens"]) & vocab.is_speech(batch["targets"])
                  & (batch["loss_weights"] > 0))
  return continued_BL & jax.random.bernoulli(rng, rate, continued_BL.shape)


def lm_loss(model: SpeechTextLM, batch, options: LossOptions, denominators: dict | None = None,
            rng: jax.Array | None = None):
  """The forward pass and loss of a batch -> (scalar loss, weighted sums for metrics).

  The train step differentiates it (per microbatch, with the whole batch's `denominators` and a
  PRNG key `rng`, which only `speech_history_dropout` uses); the eval step adds up its sums over
  batches (no key: nothing is dropped). `denominators` default to this batch's own.
  """
  dropped_BL = None
  if options.speech_history_dropout and rng is not None:
    dropped_BL = speech_history_drops(batch, model.cfg.vocab, options.speech_history_dropout, rng)
  hidden_BLD = model(batch["tokens"], batch["segment_ids"], batch["positions"],
                     batch.get("speech_codes"), dropped_BL=dropped_BL)
  sums = loss_sums(model, hidden_BLD, batch, chunk_size=options.chunk_size, remat=options.remat,
                   channel_head_capacity=options.channel_head_capacity)
  if denominators is None:
    denominators = loss_denominators(batch, model.cfg.vocab)
  loss = combine(sums, denominators, z_loss_weight=options.z_loss_weight,
                 channel_loss_weight=options.channel_loss_weight)
  if options.asr_ctc_weight:
    from slm_jax.models import ctc  # pylint: disable=import-outside-toplevel
    if not model.cfg.asr_ctc:
      raise ConfigError("LossOptions.asr_ctc_weight > 0 needs a model with a CTC head: set "
                        "ModelConfig.asr_ctc = True")
    sums = dict(sums, **ctc.asr_ctc_sums(model, hidden_BLD, batch, spelling=options.ctc_spelling,
                                         tags=options.ctc_tags))
    loss = loss + options.asr_ctc_weight * sums["ctc"] / denominators["weight"]
  return loss, sums
