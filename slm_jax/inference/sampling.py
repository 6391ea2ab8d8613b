"""Choosing the next token from logits: greedy, temperature, top-k, top-p, modality constraints.

Everything here is a pure function of arrays, traced inside the jit-compiled decode step. Each row
carries its own PRNG key (`keys_B2`), so a row's samples never depend on its neighbours in the
batch, and a request reproduces with the same seed in any slot.

Modality constraints restrict what a row may emit, by logit masks over the unified vocabulary:

    MODE_ANY     any text, speech or special id (never pad or bos)
    MODE_TEXT    text ids and EOS                 (an ASR answer)
    MODE_SPEECH  speech ids and EOS               (a TTS answer)
    MODE_FOLLOW  the modality of the last marker ([TEXT] or [SPEECH]) plus EOS and the other
                 marker, which switches the row's modality (interleaved generation)
"""
from __future__ import annotations

import dataclasses

import gin
import jax
import jax.numpy as jnp

from slm_jax.errors import SlmError
from slm_jax.unified_vocab import BOS_ID, EOS_ID, PAD_ID, UnifiedVocab

NEG_INF = -1e30

MODE_ANY = 0
MODE_TEXT = 1
MODE_SPEECH = 2
MODE_FOLLOW = 3
MODES = {"any": MODE_ANY, "text": MODE_TEXT, "speech": MODE_SPEECH, "follow": MODE_FOLLOW}


class SamplingConfigError(SlmError, ValueError):
  """Sampling settings out of range."""


@gin.configurable
@dataclasses.dataclass(frozen=True)
class SamplingConfig:
  """How the next token is chosen; static (compiled into the decode step).

  temperature: 0 means greedy (argmax); otherwise logits are divided by it before sampling.
  top_k: keep the k most likely ids (0 = off).
  top_p: keep the smallest set of ids whose probability reaches p (1.0 = off).
  channel_temperature: temperature for speech channels 1..K-1 (None = same as `temperature`).
  """
  temperature: float = 0.0
  top_k: int = 0
  top_p: float = 1.0
  channel_temperature: float | None = None

  def __post_init__(self):
    if self.temperature < 0:
      raise SamplingConfigError(f"temperature must be >= 0 (0 = greedy), got {self.temperature}")
    if self.top_k < 0:
      raise SamplingConfigError(f"top_k must be >= 0 (0 = off), got {self.top_k}")
    if not 0.0 < self.top_p <= 1.0:
      raise SamplingConfigError(f"top_p must be in (0, 1] (1 = off), got {self.top_p}")
    if self.channel_temperature is not None and self.channel_temperature < 0:
      raise SamplingConfigError(f"channel_temperature must be >= 0, got {self.channel_temperature}")

  @property
  def greedy(self) -> bool:
    return self.temperature == 0.0


def filter_logits(logits_BV: jax.Array, top_k: int, top_p: float) -> jax.Array:
  """Sets logits outside the top-k and outside the top-p nucleus to NEG_INF (ties kept)."""
  vocab = logits_BV.shape[-1]
  if top_k and top_k < vocab:
    kth_B1 = jax.lax.top_k(logits_BV, top_k)[0][..., -1:]
    logits_BV = jnp.where(logits_BV < kth_B1, NEG_INF, logits_BV)
  if top_p < 1.0:
    sorted_BV = jnp.sort(logits_BV, axis=-1)[..., ::-1]
    probs_BV = jax.nn.softmax(sorted_BV, axis=-1)
    before_BV = jnp.cumsum(probs_BV, axis=-1) - probs_BV     # mass strictly above each id
    keep_BV = before_BV < top_p                             # the first id is always kept
    cutoff_B1 = jnp.min(jnp.where(keep_BV, sorted_BV, jnp.inf), axis=-1, keepdims=True)
    logits_BV = jnp.where(logits_BV < cutoff_B1, NEG_INF, logits_BV)
  return logits_BV


def sample(logits_BV: jax.Array, keys_B2: jax.Array, temperature: float, top_k: int = 0,
           top_p: float = 1.0) -> jax.Array:
  """int32[B] ids: argmax when temperature == 0, else one draw per row with that row's key."""
  if temperature == 0.0:
    return jnp.argmax(logits_BV, axis=-1).astype(jnp.int32)
  logits_BV = filter_logits(logits_BV.astype(jnp.float32) / temperature, top_k, top_p)
  draw = jax.vmap(lambda key, row: jax.random.categorical(key, row))
  return draw(keys_B2, logits_BV).astype(jnp.int32)


def split_keys(keys_B2: jax.Array) -> tuple[jax.Array, jax.Array]:
  """Per-row (next_keys, use_keys): each row's stream advances independently."""
  both = jax.vmap(lambda k: jax.random.split(k, 2))(keys_B2)
  return both[:, 0], both[:, 1]


def fold_keys(keys_B2: jax.Array, n: int) -> jax.Array:
  """Per-row keys for the n-th of several draws from the same keys (n = 0: the keys themselves)."""
  return keys_B2 if n == 0 else jax.vmap(lambda k: jax.random.fold_in(k, n))(keys_B2)


def row_keys(seeds_B: jax.Array) -> jax.Array:
  """uint32[B, 2] raw PRNG keys, one per request seed."""
  return jax.vmap(lambda s: jax.random.key_data(jax.random.key(s)))(seeds_B)


@dataclasses.dataclass(frozen=True)
class ModalityIds:
  """The id ranges and markers the constraint masks need (static)."""
  text_start: int
  speech_start: int
  size: int
  text_marker: int
  speech_marker: int

  @classmethod
  def from_vocab(cls, vocab: UnifiedVocab, text_marker: str = "[TEXT]",
                 speech_marker: str = "[SPEECH]") -> "ModalityIds":
    return cls(vocab.text_start, vocab.speech_start, vocab.size, vocab.special_id(text_marker),
               vocab.special_id(speech_marker))


def allowed_ids(ids: ModalityIds, mode_B: jax.Array, modality_B: jax.Array,
                vocab_padded: int) -> jax.Array:
  """bool[B, V_padded]: which ids each row may emit next.

  mode_B: MODE_* per row; modality_B: the row's current modality (1 text, 2 speech) for
  MODE_FOLLOW rows, updated by `next_modality` as markers are emitted.
  """
  v_V = jnp.arange(vocab_padded)
  is_text_V = (v_V >= ids.text_start) & (v_V < ids.speech_start)
  is_speech_V = (v_V >= ids.speech_start) & (v_V < ids.size)
  is_eos_V = v_V == EOS_ID
  real_V = (v_V < ids.size) & (v_V != PAD_ID) & (v_V != BOS_ID)
  follow_B1 = mode_B == MODE_FOLLOW
  unknown_B1 = follow_B1 & (modality_B != MODE_TEXT) & (modality_B != MODE_SPEECH)  # no marker yet
  text_B1 = (mode_B == MODE_TEXT) | (follow_B1 & (modality_B == MODE_TEXT)) | unknown_B1
  speech_B1 = (mode_B == MODE_SPEECH) | (follow_B1 & (modality_B == MODE_SPEECH)) | unknown_B1
  text_B1, speech_B1, follow_B1 = text_B1[:, None], speech_B1[:, None], follow_B1[:, None]
  switch_V = (v_V == ids.text_marker) | (v_V == ids.speech_marker)
  # a FOLLOW row may emit the marker of the modality it is not in (unknown: either marker)
  in_text_B1 = text_B1 & ~speech_B1
  in_speech_B1 = speech_B1 & ~text_B1
  switch_ok_BV = follow_B1 & switch_V & ~(in_text_B1 & (v_V == ids.text_marker)) & ~(
      in_speech_B1 & (v_V == ids.speech_marker))
  constrained = (text_B1 & is_text_V) | (speech_B1 & is_speech_V) | is_eos_V | switch_ok_BV
  any_B1 = (mode_B == MODE_ANY)[:, None]
  return jnp.where(any_B1, real_V, constrained & real_V)


def next_modality(ids: ModalityIds, modality_B: jax.Array, token_B: jax.Array) -> jax.Array:
  """A row's modality after emitting (or reading) `token_B`: markers switch it."""
  modality_B = jnp.where(token_B == ids.text_marker, MODE_TEXT, modality_B)
  return jnp.where(token_B == ids.speech_marker, MODE_SPEECH, modality_B)


def apply_mask(logits_BV: jax.Array, allowed_BV: jax.Array) -> jax.Array:
  return jnp.where(allowed_BV, logits_BV, NEG_INF)
