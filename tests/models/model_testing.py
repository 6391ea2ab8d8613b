"""Helpers for the model tests: tiny configs, random packed batches, jitted logits / loss / grads.

Every test builds from `tiny()` (optionally `.replace(...)`), so shapes repeat and jax's
in-process compilation cache keeps the suite fast.
"""
import functools

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from slm_jax.unified_vocab import UnifiedVocab
from slm_jax.models.build import build
from slm_jax.models.config import ModelConfig
from slm_jax.models.loss import LossOptions, lm_loss

B, L = 2, 16


def tiny(speech_codebook_sizes=(24,), **kw) -> ModelConfig:
  vocab = UnifiedVocab(text_size=40, speech_codebook_sizes=tuple(speech_codebook_sizes))
  base = dict(vocab=vocab, num_layers=2, embed_dim=32, num_heads=4, num_kv_heads=2, head_dim=8,
              mlp_dim=64, vocab_pad_multiple=128, init_std=0.2, attention_impl="xla")
  base.update(kw)
  return ModelConfig(**base)


def tiny_towers(**kw) -> ModelConfig:
  """tiny() with one text-tower and one speech-tower layer (shared by several tests)."""
  return tiny(text_tower_layers=1, speech_tower_layers=1, **kw)


K8 = (24,) + (16,) * 6 + (8,)    # Mimi-like: 8 codebooks (small here; the last one smaller)


def random_batch(cfg: ModelConfig, seed=0, b=B, l=L, speech_fraction=0.5) -> dict:
  """A packed batch: two documents per row (positions restart), mixed text / speech ids."""
  rng = np.random.default_rng(seed)
  v = cfg.vocab
  text = rng.integers(v.text_start, v.speech_start, (b, l + 1))
  speech = rng.integers(v.speech_start, v.size, (b, l + 1))
  seq = np.where(rng.random((b, l + 1)) < speech_fraction, speech, text).astype(np.int32)
  cut = l // 2 - 1
  seg = np.concatenate([np.ones((b, cut), np.int32), np.full((b, l - cut), 2, np.int32)], 1)
  pos = np.concatenate([np.tile(np.arange(cut), (b, 1)), np.tile(np.arange(l - cut), (b, 1))], 1)
  batch = {
      "tokens": seq[:, :-1], "targets": seq[:, 1:], "segment_ids": seg, "positions": pos.astype(np.int32),
      "loss_weights": (rng.random((b, l)) < 0.8).astype(np.float32),
  }
  extra = v.extra_codebook_sizes
  if extra:
    codes = np.stack([rng.integers(0, c, (b, l + 1)) for c in extra], -1).astype(np.int32)
    batch["speech_codes"], batch["target_speech_codes"] = codes[:, :-1], codes[:, 1:]
  return {k: jnp.asarray(x) for k, x in batch.items()}


def make(cfg: ModelConfig, seed: int = 0):
  return build(cfg, seed=seed)


@functools.lru_cache(maxsize=None)
def _jitted_logits(graphdef):
  @jax.jit
  def f(state, tokens, segment_ids, positions, speech_codes):
    return nnx.merge(graphdef, state).logits(tokens, segment_ids, positions, speech_codes)
  return f


def logits(model, batch):
  """(logits [B, L, V_padded], channel logits | None), jitted (one compile per config)."""
  graphdef, state = nnx.split(model)
  return _jitted_logits(graphdef)(state, batch["tokens"], batch["segment_ids"], batch["positions"],
                                  batch.get("speech_codes"))


@functools.lru_cache(maxsize=None)
def _jitted_loss_and_grad(graphdef, options):
  def loss_fn(state, batch):
    return lm_loss(nnx.merge(graphdef, state), batch, options)
  return jax.jit(jax.value_and_grad(loss_fn, has_aux=True))


def loss_and_grads(model, batch, **loss_kw):
  """((loss, sums), grads as an nnx.State), jitted; `loss_kw` are LossOptions fields."""
  graphdef, state = nnx.split(model)
  return _jitted_loss_and_grad(graphdef, LossOptions(**loss_kw))(state, batch)


def copy_params(src, dst) -> None:
  """Copies every parameter of `src` into `dst` (same shapes; e.g. scan vs unrolled configs)."""
  nnx.update(dst, nnx.state(src, nnx.Param))


def flat(tree) -> dict:
  """{path string: array} of an nnx.State or pytree (for per-parameter comparisons)."""
  leaves = jax.tree_util.tree_flatten_with_path(tree)[0]
  return {jax.tree_util.keystr(p): np.asarray(x) for p, x in leaves}
