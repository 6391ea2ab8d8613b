"""Scanned and unrolled stacks are the same function; remat policies do not change gradients."""
import numpy as np
import pytest

from model_testing import copy_params, flat, logits, loss_and_grads, make, random_batch, tiny, tiny_towers
from slm_jax.models.remat import REMAT_POLICIES


@pytest.fixture(scope="module")
def reference():
  cfg = tiny_towers()
  model = make(cfg)
  batch = random_batch(cfg, seed=6)
  return cfg, model, batch, logits(model, batch)[0], loss_and_grads(model, batch)


def test_scan_equals_unrolled(reference):
  cfg, scanned, batch, logits_scan, ((loss_scan, _), grads_scan) = reference
  unrolled = make(cfg.replace(scan_layers=False), seed=1)
  copy_params(scanned, unrolled)
  np.testing.assert_allclose(logits(unrolled, batch)[0], logits_scan, atol=1e-5, rtol=1e-5)
  (loss_unrolled, _), grads_unrolled = loss_and_grads(unrolled, batch)
  np.testing.assert_allclose(float(loss_unrolled), float(loss_scan), rtol=1e-6)
  g_scan, g_unrolled = flat(grads_scan), flat(grads_unrolled)
  assert g_scan.keys() == g_unrolled.keys()
  for path in g_scan:
    np.testing.assert_allclose(g_unrolled[path], g_scan[path], atol=1e-5, rtol=1e-4, err_msg=path)


@pytest.fixture(scope="module")
def remat_reference():
  cfg = tiny()       # the same shapes as other tests: the no-remat reference compiles once
  model = make(cfg)
  batch = random_batch(cfg, seed=6)
  return cfg, model, batch, loss_and_grads(model, batch)


@pytest.mark.parametrize("policy", [p for p in REMAT_POLICIES if p != "none"])
def test_remat_policies_give_identical_gradients(remat_reference, policy):
  cfg, base, batch, ((loss_ref, _), grads_ref) = remat_reference
  model = make(cfg.replace(remat_policy=policy), seed=1)
  copy_params(base, model)
  (loss, _), grads = loss_and_grads(model, batch)
  np.testing.assert_allclose(float(loss), float(loss_ref), rtol=1e-6)
  g_ref, g = flat(grads_ref), flat(grads)
  assert g.keys() == g_ref.keys()
  for path in g_ref:
    np.testing.assert_allclose(g[path], g_ref[path], atol=1e-6, rtol=1e-5, err_msg=path)


def test_unknown_remat_policy_is_refused():
  with pytest.raises(ValueError, match="remat_policy"):
    tiny(remat_policy="everything")
