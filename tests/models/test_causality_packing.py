"""Causality (a token never influences earlier outputs) and packing (documents never see each other)."""
import jax.numpy as jnp
import numpy as np
import pytest

from model_testing import K8, L, logits, make, random_batch, tiny, tiny_towers


@pytest.mark.parametrize("towers", [0, 1], ids=["no_towers", "towers"])
@pytest.mark.parametrize("t", [3, 11])
def test_changing_token_t_never_changes_earlier_logits(towers, t):
  cfg = tiny_towers() if towers else tiny()
  model = make(cfg)
  batch = random_batch(cfg, seed=1)
  batch["segment_ids"] = jnp.ones_like(batch["segment_ids"])            # one document per row
  batch["positions"] = jnp.tile(jnp.arange(L, dtype=jnp.int32), (2, 1))
  v = cfg.vocab
  changed = dict(batch)
  # Flip modality too (text <-> speech), so the towers' routing changes at t.
  old = batch["tokens"][:, t]
  new = jnp.where(v.is_speech(old), v.text_start + 1, v.speech_start + 1)
  changed["tokens"] = batch["tokens"].at[:, t].set(new)
  a, _ = logits(model, batch)
  b, _ = logits(model, changed)
  np.testing.assert_allclose(a[:, :t], b[:, :t], atol=1e-6, rtol=0)
  assert np.abs(np.asarray(a[:, t:] - b[:, t:])).max(axis=-1).min() > 1e-4, "later positions must see t"


@pytest.mark.parametrize("towers", [0, 1], ids=["K8_no_towers", "K1_towers"])
def test_packed_documents_equal_documents_alone(towers):
  cfg = tiny_towers() if towers else tiny(speech_codebook_sizes=K8)
  model = make(cfg)
  full = random_batch(cfg, seed=2, b=1, l=L)
  n_a, n_b = 6, 7                              # two documents and 3 padding positions
  row = {k: full[k] for k in ("tokens", "speech_codes") if k in full}
  seg = np.array([[1] * n_a + [2] * n_b + [0] * (L - n_a - n_b)], np.int32)
  pos = np.array([list(range(n_a)) + list(range(n_b)) + [0] * (L - n_a - n_b)], np.int32)
  packed_logits, packed_ch = logits(model, {**row, "segment_ids": jnp.asarray(seg), "positions": jnp.asarray(pos)})
  for start, n in ((0, n_a), (n_a, n_b)):
    alone = {k: x[:, start:start + n] for k, x in row.items()}
    alone.update(segment_ids=jnp.ones((1, n), jnp.int32), positions=jnp.arange(n, dtype=jnp.int32)[None])
    alone_logits, alone_ch = logits(model, alone)
    np.testing.assert_allclose(packed_logits[:, start:start + n], alone_logits, atol=2e-5, rtol=1e-5)
    if packed_ch is not None:
      np.testing.assert_allclose(packed_ch[:, start:start + n], alone_ch, atol=2e-5, rtol=1e-5)
  assert np.isfinite(np.asarray(packed_logits)).all(), "padding positions must stay finite"
