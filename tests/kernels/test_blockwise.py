"""xla_blockwise attention equals the XLA reference (forward and gradients)."""
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from slm_jax.kernels import blockwise, dispatch, reference


def packed_rows(rng, b, l, ragged=True):
  """Packed documents per row (positions restart at 0 per segment), optional padded tail."""
  seg = np.zeros((b, l), np.int32)
  pos = np.zeros((b, l), np.int32)
  for r in range(b):
    used = l - (int(rng.integers(0, l // 3)) if ragged else 0)
    i, s = 0, 1
    while i < used:
      n = min(int(rng.integers(1, l // 2)), used - i)
      seg[r, i:i + n], pos[r, i:i + n] = s, np.arange(n)
      i, s = i + n, s + 1
  return jnp.asarray(seg), jnp.asarray(pos)


def inputs(seed, b=2, l=32, h=4, g=2, e=8):
  """q [B, L, H, E], k and v [B, L, G, E] (self-attention: S = L), segment ids and positions."""
  rng = np.random.default_rng(seed)
  q = jnp.asarray(rng.normal(size=(b, l, h, e)), jnp.float32)
  kk = jnp.asarray(rng.normal(size=(b, l, g, e)), jnp.float32)
  v = jnp.asarray(rng.normal(size=(b, l, g, e)), jnp.float32)
  seg, pos = packed_rows(rng, b, l)
  return q, kk, v, seg, pos


@pytest.mark.parametrize("seed,h,g,block", [(0, 4, 2, 8), (1, 4, 4, 16), (2, 6, 1, 8)])
def test_forward_matches_reference(seed, h, g, block):
  q, kk, v, seg, pos = inputs(seed, h=h, g=g)
  want = reference.attention(q, kk, v, seg, pos, seg, pos)
  got = blockwise.attention(q, kk, v, seg, pos, seg, pos, causal=True, block_size=block)
  np.testing.assert_allclose(got, want, atol=1e-5, rtol=1e-5)
  # Padding queries (segment 0) output zeros, as in the reference.
  assert np.all(np.asarray(got)[np.asarray(seg) == 0] == 0)


def test_gradients_match_reference():
  q, kk, v, seg, pos = inputs(3)
  w = jax.random.normal(jax.random.key(0), q.shape)

  def loss(fn, q, kk, v):
    return jnp.sum(fn(q, kk, v, seg, pos, seg, pos) * w)

  # jitted: eagerly, every op of the backward pass would compile on its own
  ref = jax.jit(jax.grad(functools.partial(loss, reference.attention), argnums=(0, 1, 2)))(q, kk, v)
  blk = jax.jit(jax.grad(functools.partial(loss, functools.partial(blockwise.attention, causal=True,
                                                                   block_size=8)),
                         argnums=(0, 1, 2)))(q, kk, v)
  for a, b in zip(blk, ref):
    np.testing.assert_allclose(a, b, atol=1e-5, rtol=1e-5)


def test_without_causal_promise_is_dense_and_exact():
  # Cross-attention style orders (not increasing with index): no block may be skipped.
  q, kk, v, seg, _ = inputs(4)
  rng = np.random.default_rng(4)
  q_order = jnp.asarray(rng.integers(0, 32, size=seg.shape), jnp.int32)
  kv_order = jnp.asarray(rng.integers(0, 32, size=seg.shape), jnp.int32)
  want = reference.attention(q, kk, v, seg, q_order, seg, kv_order)
  got = blockwise.attention(q, kk, v, seg, q_order, seg, kv_order, block_size=8)
  np.testing.assert_allclose(got, want, atol=1e-5, rtol=1e-5)


def test_causal_skipping_really_drops_key_blocks():
  # With the promise broken (a key after the query is visible by order), skipping changes results:
  # this shows the blockwise path does not compute the dense product.
  q, kk, v, _, _ = inputs(5)
  seg = jnp.ones(q.shape[:2], jnp.int32)
  order = jnp.zeros(q.shape[:2], jnp.int32)    # every key visible to every query
  dense = blockwise.attention(q, kk, v, seg, order, seg, order, causal=False, block_size=8)
  skipped = blockwise.attention(q, kk, v, seg, order, seg, order, causal=True, block_size=8)
  np.testing.assert_allclose(dense, reference.attention(q, kk, v, seg, order, seg, order), atol=1e-5)
  assert not np.allclose(skipped, dense, atol=1e-3)
  np.testing.assert_allclose(skipped[:, 24:], dense[:, 24:], atol=1e-5)   # last block sees all keys


def test_dispatch_passes_causal_only_to_implementations_that_take_it():
  q, kk, v, seg, pos = inputs(6)
  want = reference.attention(q, kk, v, seg, pos, seg, pos)
  for name in ("xla", "xla_blockwise"):
    got = dispatch.attention(q, kk, v, seg, pos, seg, pos, implementation=name, causal=True)
    np.testing.assert_allclose(got, want, atol=1e-5, rtol=1e-5)
  assert dispatch.resolve("auto") == "xla_blockwise"   # on CPU
  got = dispatch.attention(q, kk, v, seg, pos, seg, pos, causal=True)     # implementation="auto"
  np.testing.assert_allclose(got, want, atol=1e-5, rtol=1e-5)
  with pytest.raises(ValueError, match="unknown attention implementation"):
    dispatch.attention(q, kk, v, seg, pos, seg, pos, implementation="nope")


def test_model_loss_same_with_blockwise_and_reference_attention():
  # End to end through the model (packed rows with padding): the causal hint changes no numbers.
  from flax import nnx  # pylint: disable=import-outside-toplevel
  from slm_jax.unified_vocab import UnifiedVocab  # pylint: disable=import-outside-toplevel
  from slm_jax.models import build, config, loss  # pylint: disable=import-outside-toplevel
  cfg = config.ModelConfig(vocab=UnifiedVocab(text_size=64, speech_codebook_sizes=(32,)),
                           num_layers=2, embed_dim=32, num_heads=4, num_kv_heads=2, head_dim=8,
                           mlp_dim=64)
  rng = np.random.default_rng(7)
  seg, pos = packed_rows(rng, 2, 256)
  ids = jnp.asarray(rng.integers(3, cfg.vocab.size, size=(2, 257)), jnp.int32)
  batch = {"tokens": ids[:, :-1], "targets": ids[:, 1:], "segment_ids": seg, "positions": pos,
           "loss_weights": (seg > 0).astype(jnp.float32)}
  results = []
  for impl in ("xla", "xla_blockwise"):
    graphdef, params = nnx.split(build.build(cfg.replace(attention_impl=impl)), nnx.Param)
    options = loss.LossOptions(chunk_size=128, remat=False)
    fn = lambda p: loss.lm_loss(nnx.merge(graphdef, p), batch, options)[0]
    results.append(jax.jit(jax.value_and_grad(fn))(params))   # one program, not op by op
  (l0, g0), (l1, g1) = results
  np.testing.assert_allclose(l1, l0, rtol=1e-5)
  for a, b in zip(jax.tree.leaves(g1), jax.tree.leaves(g0)):
    np.testing.assert_allclose(a, b, atol=1e-6, rtol=1e-4)
