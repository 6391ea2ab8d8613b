"""K = 1, 8 and 80 speech channels: shapes, dtypes, finite loss and gradients; bf16 compute."""
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from model_testing import K8, B, L, flat, loss_and_grads, make, random_batch, tiny

CHANNELS = {
    "K1": (24,),
    "K8_rvq": K8,
    "K80_dmel": (16,) * 80,                # dMel: 80 bins x 16 levels (multi-hot embedding path)
}


@pytest.mark.parametrize("name", sorted(CHANNELS))
def test_shapes_dtypes_finite_loss_and_grads(name):
  sizes = CHANNELS[name]
  cfg = tiny(speech_codebook_sizes=sizes)
  model = make(cfg)
  batch = random_batch(cfg, seed=3)
  k = len(sizes)
  if k > 1:
    assert batch["speech_codes"].shape == (B, L, k - 1)
  logits_BLV, ch_BLKC = model.logits(batch["tokens"], batch["segment_ids"], batch["positions"],
                                     batch.get("speech_codes"))
  assert logits_BLV.shape == (B, L, cfg.padded_vocab_size) and logits_BLV.dtype == jnp.float32
  if k == 1:
    assert ch_BLKC is None
  else:
    assert ch_BLKC.shape == (B, L, k - 1, max(sizes[1:])) and ch_BLKC.dtype == jnp.float32
  (loss, sums), grads = loss_and_grads(model, batch)
  assert np.isfinite(float(loss)) and float(loss) > 0
  assert ("channel_ce" in sums) == (k > 1)
  for path, g in flat(grads).items():
    assert np.isfinite(g).all(), f"non-finite gradient at {path}"
  if k > 1:   # the extra channels are really trained
    g = flat(grads)
    assert np.abs(g[next(p for p in g if "channel_kernel" in p)]).max() > 0
    assert np.abs(g[next(p for p in g if "speech_channels" in p)]).max() > 0


def test_extra_channels_change_speech_positions_only():
  cfg = tiny(speech_codebook_sizes=K8)
  model = make(cfg)
  batch = random_batch(cfg, seed=4)
  batch["segment_ids"] = jnp.ones_like(batch["segment_ids"])
  batch["positions"] = jnp.tile(jnp.arange(L, dtype=jnp.int32), (B, 1))
  x0 = model.towers(batch["tokens"], batch["segment_ids"], batch["positions"], batch["speech_codes"])
  shifted = (batch["speech_codes"] + 1) % 8                     # another valid code in every channel
  x1 = model.towers(batch["tokens"], batch["segment_ids"], batch["positions"], shifted)
  speech = np.asarray(cfg.vocab.is_speech(batch["tokens"]))
  diff = np.abs(np.asarray(x0 - x1)).max(-1)
  assert (diff[~speech] == 0).all() and (diff[speech] > 0).all()


def test_missing_speech_codes_is_a_clear_error():
  cfg = tiny(speech_codebook_sizes=CHANNELS["K8_rvq"])
  model = make(cfg)
  batch = random_batch(cfg)
  with pytest.raises(ValueError, match="speech_codes"):
    model(batch["tokens"], batch["segment_ids"], batch["positions"])


def test_float32_params_with_bfloat16_compute():
  cfg32 = tiny()
  cfg16 = cfg32.replace(dtype="bfloat16")
  m32, m16 = make(cfg32), make(cfg16)
  nnx.update(m16, nnx.state(m32, nnx.Param))
  batch = random_batch(cfg32, seed=5)
  h16 = m16(batch["tokens"], batch["segment_ids"], batch["positions"])
  assert h16.dtype == jnp.bfloat16
  for path, p in flat(nnx.state(m16, nnx.Param)).items():
    assert p.dtype == np.float32, f"{path} must stay float32"
  (l32, _), _ = loss_and_grads(m32, batch)
  (l16, _), g16 = loss_and_grads(m16, batch)
  assert l16.dtype == jnp.float32
  np.testing.assert_allclose(float(l16), float(l32), rtol=2e-2)
  for path, g in flat(g16).items():
    assert g.dtype == np.float32 and np.isfinite(g).all(), path
  # bf16 compute is really in effect (not silently float32).
  assert float(l16) != float(l32)
