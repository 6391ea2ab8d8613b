import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from slm_jax.train import optimizer as opt
from slm_jax.train.param_paths import param_path


@pytest.mark.parametrize("decay", ["cosine", "linear", "constant"])
def test_schedule_warmup_then_decay(decay):
  s = opt.learning_rate_schedule(peak_learning_rate=1.0, warmup_steps=10, decay_steps=100,
                                 decay=decay, end_ratio=0.1)
  assert float(s(0)) == 0.0
  np.testing.assert_allclose(float(s(5)), 0.5, rtol=1e-6)
  np.testing.assert_allclose(float(s(10)), 1.0, rtol=1e-6)
  end = {"cosine": 0.1, "linear": 0.1, "constant": 1.0}[decay]
  np.testing.assert_allclose(float(s(110)), end, rtol=1e-5)
  np.testing.assert_allclose(float(s(1000)), end, rtol=1e-5)
  if decay == "cosine":   # cosine is above linear at the midpoint
    np.testing.assert_allclose(float(s(60)), 0.1 + 0.9 * 0.5, rtol=1e-5)
  if decay == "linear":
    np.testing.assert_allclose(float(s(60)), 0.55, rtol=1e-5)


def test_unknown_decay_is_clear():
  with pytest.raises(ValueError, match="decay"):
    opt.learning_rate_schedule(decay="exp")


def _params():
  return {"decoder": {"attn_norm": {"scale": jnp.ones(3)}, "mlp": {"kernel": jnp.ones((2, 3))}},
          "heads": {"tied_embed": {"table": jnp.ones((4, 3))}}}


def test_weight_decay_mask_and_freeze():
  params = _params()
  o = opt.OptimizerOptions(weight_decay=0.5, clip_norm=None, b1=0.0, b2=0.0,
                            freeze_patterns=("^heads/",))
  tx = opt.make_optimizer(params, optax.constant_schedule(0.1), o)
  state = tx.init(params)
  # frozen parameters have no optimizer state
  moments = [x for x in jax.tree.leaves(state) if x.ndim > 0]
  assert sorted(x.shape for x in moments) == sorted([(3,), (2, 3)] * 2)
  zero = jax.tree.map(jnp.zeros_like, params)
  updates, _ = tx.update(zero, state, params)
  # zero gradient: only decayed (non-norm, non-embedding, trainable) parameters move
  np.testing.assert_allclose(updates["decoder"]["mlp"]["kernel"], -0.1 * 0.5 * np.ones((2, 3)), rtol=1e-6)
  np.testing.assert_array_equal(updates["decoder"]["attn_norm"]["scale"], 0.0)
  np.testing.assert_array_equal(updates["heads"]["tied_embed"]["table"], 0.0)


def test_freeze_pattern_that_matches_nothing_is_an_error():
  with pytest.raises(ValueError, match="matches no parameter"):
    opt.trainable_mask(_params(), ("^encoder/",))



def test_weight_decay_mask_on_a_real_model():
  """On the built model (K = 8, tied): every embedding table and norm is excluded from weight
  decay, every projection kernel (output heads included) decayed; every pattern matches."""
  import sys, os  # pylint: disable=import-outside-toplevel,multiple-imports
  sys.path.insert(0, os.path.join(os.path.dirname(__file__), os.pardir, "models"))
  from flax import nnx  # pylint: disable=import-outside-toplevel
  from model_testing import K8, make, tiny  # pylint: disable=import-outside-toplevel
  params = nnx.state(make(tiny(speech_codebook_sizes=K8)), nnx.Param)
  patterns = opt.OptimizerOptions().no_decay_patterns
  no_decay = opt.path_mask(params, patterns)
  decided = {param_path(p): m for p, m in jax.tree_util.tree_flatten_with_path(no_decay)[0]}
  assert decided["towers/speech_channels/table/value"]
  assert decided["heads/tied_embed/table/value"]
  assert decided["final_norm/scale/value"] and decided["decoder/blocks/attn_norm/scale/value"]
  assert not decided["decoder/blocks/mlp/up/kernel/value"]
  assert not decided["heads/channel_kernel/value"]
  assert all(("table" in p or "scale" in p) == m for p, m in decided.items())
  opt.check_patterns_match(params, [p for p in patterns if p != "bias"], "no_decay")
