"""The slot-based generation engine: prefill a prompt, insert it into a slot, generate.

    engine = Engine(model, slots=8, max_length=1024, sampling=SamplingConfig(temperature=0.8))
    state = engine.init_decode_state()
    prefix = engine.prefill(prompt_ids, seed=0, mode="text", max_new_tokens=64)
    state = engine.insert(prefix, state, slot=3)
    state, out = engine.generate(state)         # `steps_per_call` tokens for every active slot

Every function is jit-compiled once: `prefill` once per prompt-length bucket (prompts are padded
to the next bucket), `insert` and `generate` once. The model's parameters are an argument of each
compiled function (so the same functions serve export). A slot holds one request; when it emits a
stop token, reaches its `max_new_tokens` or fills the cache it turns inactive and its slot can take
the next request (continuous batching, `inference/batching.py`).

Speech with K > 1 channels: channel 0 comes from the unified head like any token, channels 1..K-1
from their heads at the same step, and the next step embeds all K.
"""
from __future__ import annotations

import contextlib
from typing import Optional, Sequence

import flax.struct
import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from jax.sharding import Mesh

from slm_jax import sharding
from slm_jax.errors import SlmError
from slm_jax.inference import sampling
from slm_jax.models.build import cache_bytes, init_cache
from slm_jax.models.kv_cache import KVCache
from slm_jax.unified_vocab import EOS_ID, PAD_ID


class PromptError(SlmError, ValueError):
  """A prompt the engine cannot take (empty, too long for the cache, ids out of range)."""


@flax.struct.dataclass
class DecodeState:
  """Everything the decode loop carries, per slot (B = slots)."""
  cache: KVCache
  token_B: jax.Array          # int32: the last emitted token, fed at the next step
  codes_BK: jax.Array         # int32 [B, K-1]: its extra speech channels (zeros for non-speech)
  position_B: jax.Array       # int32: where token_B is written (its position in the sequence)
  key_B2: jax.Array           # uint32 [B, 2]: per-slot PRNG key
  mode_B: jax.Array           # int32: sampling.MODE_*
  modality_B: jax.Array       # int32: current modality for MODE_FOLLOW rows
  generated_B: jax.Array      # int32: tokens emitted so far (the prefill's first one included)
  max_new_B: jax.Array        # int32: the request's budget of new tokens
  active_B: jax.Array         # bool: the slot holds a request that is still generating


@flax.struct.dataclass
class StepOutput:
  """What `generate` emitted: n steps x B slots."""
  tokens_NB: jax.Array        # int32
  codes_NBK: jax.Array        # int32 [n, B, K-1]
  emitted_NB: jax.Array       # bool: a real token of an active request at that step
  done_NB: jax.Array          # bool: that token finished its request


def default_buckets(max_length: int, smallest: int = 16) -> tuple[int, ...]:
  """Prompt-length buckets: powers of two from `smallest`, then `max_length` itself."""
  out, b = [], smallest
  while b < max_length:
    out.append(b)
    b *= 2
  return tuple(out) + (max_length,)


class Engine:
  """Prefill / insert / generate over a `SpeechTextLM` (see the module docstring)."""

  def __init__(self, model, *, slots: int = 8, max_length: int = 1024,
               sampling_config: sampling.SamplingConfig = sampling.SamplingConfig(),
               steps_per_call: int = 16, cache_dtype: Optional[str] = None,
               stop_ids: Sequence[int] = (EOS_ID,), buckets: Optional[Sequence[int]] = None,
               mesh: Optional[Mesh] = None, rules=None):
    """`mesh`: trace the compiled functions under the logical-axis rules (`rules`, default the
    gin-bound table), so the cache and activations shard like training; the parameters keep the
    shardings they were loaded with (e.g. `load_inference_checkpoint(dir, mesh=mesh)`)."""
    self.cfg = model.cfg
    self.mesh, self.rules = mesh, rules
    self.vocab = model.cfg.vocab
    self.graphdef, self.params = nnx.split(model)
    self.slots, self.max_length, self.steps_per_call = slots, max_length, steps_per_call
    self.sampling = sampling_config
    self.cache_dtype = jnp.dtype(cache_dtype) if cache_dtype else self.cfg.jnp_dtype
    self.stop_ids = tuple(int(s) for s in stop_ids)
    self.buckets = tuple(sorted(set(buckets or default_buckets(max_length))))
    if self.buckets[-1] > max_length:
      raise ValueError(f"bucket {self.buckets[-1]} is longer than max_length={max_length}")
    self.ids = sampling.ModalityIds.from_vocab(self.vocab)
    self.num_extra = self.vocab.num_channels - 1
    self._init = jax.jit(self._init_decode_state)
    self._prefill = jax.jit(self._prefill_fn)
    self._insert = jax.jit(self._insert_fn, donate_argnums=(1,))
    self._generate = jax.jit(self._generate_fn, donate_argnums=(1,))

  # -- sizes --------------------------------------------------------------------------------
  def cache_bytes(self) -> int:
    """Bytes of the decode state's cache (keys, values and slot metadata)."""
    return cache_bytes(self.cfg, self.slots, self.max_length, self.cache_dtype)

  def memory_report(self) -> str:
    params = sum(x.size * x.dtype.itemsize for x in jax.tree.leaves(self.params))
    return (f"parameters {params / 2**20:.1f} MiB, KV cache {self.cache_bytes() / 2**20:.1f} MiB "
            f"({self.slots} slots x {self.max_length} positions, {jnp.dtype(self.cache_dtype).name})")

  # -- the model, from parameters -------------------------------------------------------------
  def _model(self, params):
    return nnx.merge(self.graphdef, params)

  def _sharded(self):
    """The activation-sharding context the compiled functions trace under (none without a mesh)."""
    if self.mesh is None:
      return contextlib.nullcontext()
    return sharding.activation_sharding(self.mesh, self.rules)

  def _next_tokens(self, model, h_BD, key_B2, mode_B, modality_B):
    """Samples the unified token and the extra channels from final hidden states."""
    logits_BV = model.heads.logits(h_BD)
    allowed_BV = sampling.allowed_ids(self.ids, mode_B, modality_B, logits_BV.shape[-1])
    key_B2, use_B2 = sampling.split_keys(key_B2)
    tok_key_B2, ch_key_B2 = sampling.split_keys(use_B2)
    s = self.sampling
    token_B = sampling.sample(sampling.apply_mask(logits_BV, allowed_BV), tok_key_B2,
                              s.temperature, s.top_k, s.top_p)
    if self.num_extra:
      temp = s.temperature if s.channel_temperature is None else s.channel_temperature
      codes_BK = model.heads.choose_channels(
          h_BD, token_B - self.vocab.speech_start,
          lambda logits, frame: sample_channels(logits, sampling.fold_keys(ch_key_B2, frame), temp))
      codes_BK = jnp.where(self.vocab.is_speech(token_B)[:, None], codes_BK, 0)
    else:
      codes_BK = jnp.zeros(token_B.shape + (0,), jnp.int32)
    return token_B, codes_BK, key_B2

  def _is_stop(self, token_B):
    return jnp.isin(token_B, jnp.asarray(self.stop_ids, jnp.int32))

  # -- prefill --------------------------------------------------------------------------------
  def _prefill_fn(self, params, tokens_1L, codes_1LK, length, key_2, mode, modality, max_new):
    with self._sharded():
      return self._prefill_body(params, tokens_1L, codes_1LK, length, key_2, mode, modality, max_new)

  def _prefill_body(self, params, tokens_1L, codes_1LK, length, key_2, mode, modality, max_new):
    model = self._model(params)
    bucket = tokens_1L.shape[1]
    index_1L = jnp.arange(bucket)[None]
    segment_ids_1L = (index_1L < length).astype(jnp.int32)
    cache = init_cache(self.cfg, 1, self.max_length, self.cache_dtype)
    h_1LD, cache = model.forward_cached(tokens_1L, segment_ids_1L, index_1L.astype(jnp.int32),
                                        codes_1LK if self.num_extra else None, cache, empty=True)
    h_1D = h_1LD[:, length - 1]   # (a Zipper model's hidden states are a pytree)
    mode_1, modality_1 = mode[None], modality[None]
    token_1, codes_1K, key_12 = self._next_tokens(model, h_1D, key_2[None], mode_1, modality_1)
    modality_1 = sampling.next_modality(self.ids, modality_1, token_1)
    position_1 = length[None].astype(jnp.int32)
    done_1 = (self._is_stop(token_1) | (max_new <= 1) | (position_1 >= self.max_length))
    return DecodeState(cache, token_1, codes_1K, position_1, key_12, mode_1, modality_1,
                       jnp.ones((1,), jnp.int32), max_new[None], ~done_1)

  def prefill(self, prompt_ids, prompt_codes=None, *, seed: int = 0, mode: str = "any",
              max_new_tokens: int = 256) -> DecodeState:
    """Runs a whole prompt through the model at once; returns a one-row state whose first new
    token (`token_B[0]`) is already sampled. `prompt_codes`: int32[n, K-1] for K > 1 speech."""
    ids = np.asarray(prompt_ids, np.int32).reshape(-1)
    n = ids.size
    if n == 0:
      raise PromptError("empty prompt: a prompt needs at least one token (e.g. BOS)")
    if n >= self.max_length:
      raise PromptError(f"the prompt has {n} tokens but the cache holds {self.max_length} "
                        "positions; raise max_length or shorten the prompt")
    if ids.min() < 0 or ids.max() >= self.vocab.size or (ids == PAD_ID).any():
      raise PromptError(f"prompt ids must be in [1, {self.vocab.size}) (no padding); got "
                        f"min {ids.min()}, max {ids.max()}")
    if mode not in sampling.MODES:
      raise PromptError(f"unknown mode {mode!r}; use one of {sorted(sampling.MODES)}")
    if max_new_tokens < 1:
      raise PromptError(f"max_new_tokens must be >= 1, got {max_new_tokens}")
    bucket = next(b for b in self.buckets if b >= n)
    tokens = np.zeros((1, bucket), np.int32)
    tokens[0, :n] = ids
    codes = np.zeros((1, bucket, max(self.num_extra, 0)), np.int32)
    if self.num_extra:
      if prompt_codes is None:
        prompt_codes = np.zeros((n, self.num_extra), np.int32)
      prompt_codes = np.asarray(prompt_codes, np.int32)
      if prompt_codes.shape != (n, self.num_extra):
        raise PromptError(f"prompt_codes must be [{n}, {self.num_extra}], got {prompt_codes.shape}")
      codes[0, :n] = prompt_codes
    modality = prompt_modality(ids, self.ids)
    key = jax.random.key_data(jax.random.key(seed))
    return self._prefill(self.params, jnp.asarray(tokens), jnp.asarray(codes), jnp.int32(n), key,
                         jnp.int32(sampling.MODES[mode]), jnp.int32(modality),
                         jnp.int32(max_new_tokens))

  # -- slots ----------------------------------------------------------------------------------
  def init_decode_state(self) -> DecodeState:
    with self._sharded():
      return self._init()

  def _init_decode_state(self) -> DecodeState:
    b = self.slots
    zeros = lambda: jnp.zeros((b,), jnp.int32)   # noqa: E731  (distinct buffers: they are donated)
    return DecodeState(init_cache(self.cfg, b, self.max_length, self.cache_dtype), zeros(),
                       jnp.zeros((b, self.num_extra), jnp.int32), zeros(),
                       jnp.zeros((b, 2), jnp.uint32), zeros(), zeros(), zeros(), zeros(),
                       jnp.zeros((b,), bool))

  @staticmethod
  def _insert_fn(prefix: DecodeState, state: DecodeState, slot):
    def put(dst, src):
      return jax.lax.dynamic_update_slice_in_dim(dst, src.astype(dst.dtype), slot, axis=_batch_axis(dst))
    return jax.tree.map(put, state, prefix)

  def insert(self, prefix: DecodeState, state: DecodeState, slot: int) -> DecodeState:
    """Puts a prefilled request into `slot` (whatever was there is dropped)."""
    if not 0 <= slot < self.slots:
      raise ValueError(f"slot {slot} out of range [0, {self.slots})")
    return self._insert(prefix, state, jnp.int32(slot))

  # -- decode ---------------------------------------------------------------------------------
  def _step(self, model, state: DecodeState):
    active_B = state.active_B
    tokens_B1 = state.token_B[:, None]
    segment_ids_B1 = active_B.astype(jnp.int32)[:, None]
    positions_B1 = jnp.minimum(state.position_B, self.max_length - 1)[:, None]
    codes_B1K = state.codes_BK[:, None] if self.num_extra else None
    h_B1D, cache = model.forward_cached(tokens_B1, segment_ids_B1, positions_B1, codes_B1K,
                                        state.cache)
    token_B, codes_BK, key_B2 = self._next_tokens(model, h_B1D[:, 0], state.key_B2, state.mode_B,
                                                  state.modality_B)
    token_B = jnp.where(active_B, token_B, PAD_ID)
    codes_BK = jnp.where(active_B[:, None], codes_BK, 0)
    generated_B = state.generated_B + active_B
    position_B = state.position_B + active_B
    done_B = active_B & (self._is_stop(token_B) | (generated_B >= state.max_new_B)
                         | (position_B >= self.max_length))
    new = state.replace(cache=cache, token_B=jnp.where(active_B, token_B, state.token_B),
                        codes_BK=jnp.where(active_B[:, None], codes_BK, state.codes_BK),
                        position_B=position_B, key_B2=key_B2,
                        modality_B=sampling.next_modality(self.ids, state.modality_B, token_B),
                        generated_B=generated_B, active_B=active_B & ~done_B)
    return new, StepOutput(token_B, codes_BK, active_B, done_B)

  def _generate_fn(self, params, state: DecodeState):
    with self._sharded():
      model = self._model(params)
      return jax.lax.scan(lambda s, _: self._step(model, s), state, None,
                          length=self.steps_per_call)

  def generate(self, state: DecodeState) -> tuple[DecodeState, StepOutput]:
    """`steps_per_call` decode steps for every active slot (inactive slots emit nothing)."""
    return self._generate(self.params, state)


def _batch_axis(x) -> int:
  """The slot axis of a decode-state leaf: 1 for stacked keys/values [Y, B, ...], else 0."""
  return 1 if x.ndim == 5 else 0


def sample_channels(ch_logits_BKC, key_B2, temperature: float):
  """int32[B, K-1]: one code per extra speech channel (argmax at temperature 0)."""
  if temperature == 0.0:
    return jnp.argmax(ch_logits_BKC, axis=-1).astype(jnp.int32)
  k = ch_logits_BKC.shape[1]
  keys_BK2 = jax.vmap(lambda key: jax.random.split(key, k))(key_B2)
  draw = jax.vmap(jax.vmap(lambda key, row: jax.random.categorical(key, row / temperature)))
  return draw(keys_BK2, ch_logits_BKC).astype(jnp.int32)


def prompt_modality(ids: np.ndarray, modality_ids: sampling.ModalityIds) -> int:
  """The modality the last [TEXT] / [SPEECH] marker of a prompt opened (0 if none)."""
  for t in ids[::-1]:
    if t == modality_ids.text_marker:
      return sampling.MODE_TEXT
    if t == modality_ids.speech_marker:
      return sampling.MODE_SPEECH
  return 0
