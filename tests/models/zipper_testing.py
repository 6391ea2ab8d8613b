"""Helpers for the Zipper tests: a tiny two-tower config and batches with both streams."""
import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from model_testing import random_batch, tiny
from slm_jax.models.zipper_config import TowerConfig
from slm_jax.unified_vocab import BOS_ID


def tiny_zipper(speech_codebook_sizes=(24, 16, 8), text_every=1, speech_every=2, **kw):
  """Towers of different depth, width and heads: text 2 x 32 (4 heads), speech 3 x 24 (2 heads)."""
  return tiny(speech_codebook_sizes=speech_codebook_sizes, architecture="zipper",
              zipper_text=TowerConfig(2, 32, 4, 2, 8, 64, text_every, True),
              zipper_speech=TowerConfig(3, 24, 2, 1, 8, 48, speech_every, True), **kw)


def mixed_rows(vocab, n, b=1, seed=0, max_run=4):
  """int32[b, n]: rows of BOS, then text and speech runs of 1..max_run tokens, each opened by its
  marker (the towers switch often, and rows are in different towers at the same step)."""
  rng = np.random.default_rng(seed)
  rows = []
  for _ in range(b):
    out = [BOS_ID]
    while len(out) < n:
      speech = rng.random() < 0.5
      out.append(vocab.special_id("[SPEECH]" if speech else "[TEXT]"))
      lo, hi = (vocab.speech_start, vocab.size) if speech else (vocab.text_start, vocab.speech_start)
      out.extend(rng.integers(lo, hi, rng.integers(1, max_run + 1)).tolist())
    rows.append(out[:n])
  return np.asarray(rows, np.int32)


def zipper_batch(cfg, seed=0, b=2, l=16):
  """random_batch with [SPEECH] / [TEXT] markers sprinkled in (both towers' specials)."""
  batch = dict(random_batch(cfg, seed=seed, b=b, l=l))
  rng = np.random.default_rng(seed + 100)
  tokens = np.array(batch["tokens"])
  marks = rng.random(tokens.shape) < 0.15
  which = np.where(rng.random(tokens.shape) < 0.5, cfg.vocab.special_id("[SPEECH]"),
                   cfg.vocab.special_id("[TEXT]"))
  batch["tokens"] = jnp.asarray(np.where(marks, which, tokens), jnp.int32)
  return batch


def randomize(model, seed=1, gate=None, std=0.3):
  """Random values for every parameter (input MLPs included); gates set to `gate` if given."""
  state = nnx.state(model, nnx.Param)
  leaves, treedef = jax.tree_util.tree_flatten_with_path(state)
  keys = jax.random.split(jax.random.key(seed), len(leaves))
  out = []
  for (path, x), k in zip(leaves, keys):
    name = jax.tree_util.keystr(path)
    if "gate" in name and x.ndim == 0:
      out.append(jnp.asarray(gate if gate is not None else x, x.dtype))
    elif "norm" in name:
      out.append(x + 0.1 * jax.random.normal(k, x.shape, x.dtype))
    else:
      out.append(std * jax.random.normal(k, x.shape, x.dtype))
  nnx.update(model, jax.tree_util.tree_unflatten(treedef, out))
  return model


def greedy_by_recomputation(model, prompt, prompt_codes, steps, max_len=32):
  """Greedy continuation (mode any) by running the full model over the whole sequence at each
  step, the reference for cached generation: (new token ids, new codes int32[steps, K-1])."""
  from slm_jax.inference import sampling  # pylint: disable=import-outside-toplevel
  v, k_extra = model.cfg.vocab, model.cfg.num_channels - 1
  ids = sampling.ModalityIds.from_vocab(v)

  @nnx.jit
  def last(m, t, s, p, c, n):
    lg, ch = m.logits(t, s, p, c)
    return lg[:, n - 1], ch[:, n - 1]

  toks, cds = list(prompt), list(prompt_codes)
  for _ in range(steps):
    n = len(toks)
    t = np.zeros((1, max_len), np.int32)
    t[0, :n] = toks
    c = np.zeros((1, max_len, k_extra), np.int32)
    c[0, :n] = np.stack(cds)
    seg = (np.arange(max_len) < n).astype(np.int32)[None]
    lg, ch = last(model, jnp.asarray(t), jnp.asarray(seg),
                  jnp.arange(max_len, dtype=jnp.int32)[None], jnp.asarray(c), n)
    allowed = sampling.allowed_ids(ids, jnp.asarray([sampling.MODES["any"]]),
                                   jnp.zeros(1, jnp.int32), lg.shape[-1])
    tok = int(jnp.argmax(sampling.apply_mask(lg, allowed), -1)[0])
    code = np.asarray(jnp.argmax(ch, -1)[0]) if v.is_speech(tok) else np.zeros(k_extra, np.int32)
    toks.append(tok)
    cds.append(code.astype(np.int32))
  return toks[len(prompt):], np.stack(cds[len(prompt):])
