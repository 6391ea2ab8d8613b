"""The chunked loss equals plain cross-entropy; buckets, z-loss and padded vocabulary ids."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from model_testing import K8, make, random_batch, tiny
from slm_jax.unified_vocab import EOS_ID
from slm_jax.models import loss as loss_lib
from slm_jax.models.heads import NEG_INF


@pytest.fixture(scope="module")
def setup():
  cfg = tiny(speech_codebook_sizes=K8)     # K = 8, extra codebooks of different sizes
  model = make(cfg)
  batch = random_batch(cfg, seed=7)
  hidden = model(batch["tokens"], batch["segment_ids"], batch["positions"], batch["speech_codes"])
  return cfg, model, batch, hidden


def _plain_ce(logits_NV, targets_N):
  """Cross-entropy from scratch in numpy (float64)."""
  x = np.asarray(logits_NV, np.float64)
  m = x.max(-1, keepdims=True)
  lse = (m + np.log(np.exp(x - m).sum(-1, keepdims=True)))[:, 0]
  return lse - x[np.arange(len(targets_N)), targets_N], lse


@pytest.mark.parametrize("chunk_size", [1, 7, 8, 1024])
def test_chunked_sums_equal_plain_cross_entropy(setup, chunk_size):
  cfg, model, batch, hidden = setup
  sums = jax.jit(lambda h: loss_lib.loss_sums(model, h, batch, chunk_size=chunk_size))(hidden)
  logits = np.asarray(model.heads.logits(hidden)).reshape(-1, cfg.padded_vocab_size)
  t = np.asarray(batch["targets"]).reshape(-1)
  w = np.asarray(batch["loss_weights"]).reshape(-1)
  ce, lse = _plain_ce(logits, t)
  np.testing.assert_allclose(float(sums["ce"]), (ce * w).sum(), rtol=1e-5)
  np.testing.assert_allclose(float(sums["z"]), (lse ** 2 * w).sum(), rtol=1e-5)
  np.testing.assert_allclose(float(sums["weight"]), w.sum())
  np.testing.assert_allclose(float(sums["correct"]), ((logits.argmax(-1) == t) * w).sum())
  # Extra channels: CE over each channel's own codebook, on speech targets only.
  ch = np.asarray(model.heads.channel_logits(hidden)).reshape(len(t), len(K8) - 1, -1)
  tc = np.asarray(batch["target_speech_codes"]).reshape(len(t), len(K8) - 1)
  speech_w = w * np.asarray(cfg.vocab.is_speech(t))
  for k, size in enumerate(K8[1:]):
    ce_k, _ = _plain_ce(ch[:, k, :size], tc[:, k])
    np.testing.assert_allclose(float(sums["channel_ce"][k]), (ce_k * speech_w).sum(), rtol=1e-5)


def test_modality_buckets_on_a_hand_made_batch():
  cfg = tiny()
  model = make(cfg)
  v = cfg.vocab
  t, s = v.text_start, v.speech_start
  targets = jnp.array([[t + 1, t + 2, s + 3, s + 4, s + 5, EOS_ID, 0, 0]], jnp.int32)
  weights = jnp.array([[1.0, 0.5, 1.0, 1.0, 0.0, 1.0, 0.0, 0.0]])
  batch = {"targets": targets, "loss_weights": weights}
  hidden = jax.random.normal(jax.random.key(0), (1, 8, cfg.embed_dim))
  sums = loss_lib.loss_sums(model, hidden, batch, chunk_size=3)
  ce, _ = _plain_ce(np.asarray(model.heads.logits(hidden))[0], np.asarray(targets)[0])
  np.testing.assert_allclose(float(sums["text_weight"]), 1.5)
  np.testing.assert_allclose(float(sums["speech_weight"]), 2.0)
  np.testing.assert_allclose(float(sums["weight"]), 4.5)   # EOS (special) counts in the total only
  np.testing.assert_allclose(float(sums["text_ce"]), ce[0] + 0.5 * ce[1], rtol=1e-5)
  np.testing.assert_allclose(float(sums["speech_ce"]), ce[2] + ce[3], rtol=1e-5)
  np.testing.assert_allclose(float(sums["ce"]), ce[0] + 0.5 * ce[1] + ce[2] + ce[3] + ce[5], rtol=1e-5)
  denominators = loss_lib.loss_denominators(batch, v)
  np.testing.assert_allclose(float(denominators["speech_weight"]), 2.0)
  metrics = loss_lib.metrics_from_sums(sums)
  np.testing.assert_allclose(float(metrics["loss/text_ce"]), (ce[0] + 0.5 * ce[1]) / 1.5, rtol=1e-5)


def test_z_loss_and_channel_weight_in_combine(setup):
  cfg, model, batch, hidden = setup
  sums = loss_lib.loss_sums(model, hidden, batch)
  den = loss_lib.loss_denominators(batch, cfg.vocab)
  base = loss_lib.combine(sums, den, z_loss_weight=0.0, channel_loss_weight=0.0)
  np.testing.assert_allclose(float(base), float(sums["ce"] / sums["weight"]), rtol=1e-6)
  with_z = loss_lib.combine(sums, den, z_loss_weight=1e-2, channel_loss_weight=0.0)
  np.testing.assert_allclose(float(with_z - base), 1e-2 * float(sums["z"] / sums["weight"]), rtol=1e-4)
  with_ch = loss_lib.combine(sums, den, z_loss_weight=0.0, channel_loss_weight=0.5)
  expected = 0.5 * float(np.mean(sums["channel_ce"]) / den["speech_weight"])
  np.testing.assert_allclose(float(with_ch - base), expected, rtol=1e-4)
  # lm_loss wires the options through.
  options = loss_lib.LossOptions(z_loss_weight=1e-2, channel_loss_weight=0.0, chunk_size=5)
  loss, _ = loss_lib.lm_loss(model, batch, options)
  np.testing.assert_allclose(float(loss), float(with_z), rtol=1e-5)


def test_padded_vocab_ids_never_win():
  cfg = tiny()
  model = make(cfg)
  v = cfg.vocab
  assert cfg.padded_vocab_size > v.size
  # Make the padding rows of the (tied) table enormous: they must still never be predicted.
  table = model.towers.embed.table.get_value()
  model.towers.embed.table.set_value(table.at[v.size:].set(100.0))
  hidden = jnp.ones((1, 4, cfg.embed_dim))
  logits = model.heads.logits(hidden)
  assert (np.asarray(logits[..., v.size:]) == NEG_INF).all()
  assert (np.asarray(logits.argmax(-1)) < v.size).all()
  batch = {"targets": jnp.full((1, 4), v.text_start, jnp.int32), "loss_weights": jnp.ones((1, 4))}
  sums = loss_lib.loss_sums(model, hidden, batch)
  ce, _ = _plain_ce(np.asarray(logits)[0, :, :v.size], np.full(4, v.text_start))
  np.testing.assert_allclose(float(sums["ce"]), ce.sum(), rtol=1e-5)   # padding adds nothing to the lse


@pytest.mark.parametrize("mesh_axes", [("data", 8, None), ("sequence", 8, "seq")])
def test_chunked_loss_on_a_sharded_batch_gathers_nothing(setup, mesh_axes):
  """Many chunks over a batch sharded on 8 devices (by rows, or by sequence): every device
  computes the head and loss of its own positions; no hidden state is all-gathered."""
  from jax.sharding import Mesh, NamedSharding, PartitionSpec as P  # pylint: disable=import-outside-toplevel
  cfg, model, batch, hidden = setup
  axis, n, kind = mesh_axes
  b, l, d = 8, 64, hidden.shape[-1]
  big = random_batch(cfg, seed=3, b=b, l=l)
  h = jax.random.normal(jax.random.key(0), (b, l, d), jnp.float32)
  mesh = Mesh(np.array(jax.devices()[:n]), (axis,))
  spec = P(None, axis) if kind == "seq" else P(axis)
  put = lambda x: jax.device_put(x, NamedSharding(mesh, P(*spec, *([None] * (x.ndim - len(spec))))))
  h_s = put(h)
  keys = ("targets", "loss_weights", "target_speech_codes")
  sub = {k: put(big[k]) for k in keys}
  f = jax.jit(lambda h, s: loss_lib.loss_sums(model, h, s, chunk_size=64))  # 8 chunks
  hlo = f.lower(h_s, sub).compile().as_text()
  assert "all-gather" not in hlo, "the chunked loss gathered the sharded batch"
  ref = loss_lib.loss_sums(model, h, {k: big[k] for k in keys}, chunk_size=b * l)  # one chunk
  got = f(h_s, sub)
  for k in ("ce", "z", "weight", "correct", "channel_ce"):
    np.testing.assert_allclose(np.asarray(got[k]), np.asarray(ref[k]), rtol=1e-5)
