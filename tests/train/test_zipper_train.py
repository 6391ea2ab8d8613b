"""Zipper training: a frozen tower stays bit-identical (no optimizer state), its text-only outputs
unchanged; the sharded step equals the unsharded one; `pallas` equals `xla`; tower restores."""
import os
import sys

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx
from jax.sharding import NamedSharding, PartitionSpec as P

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "models"))
from zipper_testing import randomize, tiny_zipper, zipper_batch  # noqa: E402

from slm_jax import sharding  # noqa: E402
from slm_jax.models import loss as loss_lib  # noqa: E402
from slm_jax.models.build import build  # noqa: E402
from slm_jax.models.lm import SpeechTextLM  # noqa: E402
from slm_jax.models.zipper_init import TowerInitError, copy_tower_params  # noqa: E402
from slm_jax.train import optimizer as opt_lib  # noqa: E402
from slm_jax.train.param_paths import param_path  # noqa: E402
from slm_jax.train.state import TrainState  # noqa: E402
from slm_jax.train.step import make_train_step  # noqa: E402


def _flat(tree):
  return {param_path(p): np.asarray(x) for p, x in jax.tree_util.tree_flatten_with_path(tree)[0]}


def _state_and_step(model, options):
  graphdef, params = nnx.split(model, nnx.Param)
  params = params.to_pure_dict()
  schedule = optax.constant_schedule(3e-2)
  tx = opt_lib.make_optimizer(params, schedule, options)
  trainable = opt_lib.trainable_mask(params, options.freeze_patterns)
  step = make_train_step(graphdef, tx, schedule, trainable, vocab=model.cfg.vocab,
                         loss_options=loss_lib.LossOptions(chunk_size=64, remat=False))
  zero = jnp.zeros((), jnp.int32)
  state = TrainState(params, tx.init(params), zero, jax.random.PRNGKey(0), zero, zero)
  return graphdef, state, jax.jit(step)


def _text_only(cfg, seed=0):
  rng = np.random.default_rng(seed)
  v = cfg.vocab
  ids = rng.integers(v.text_start, v.speech_start, (2, 17)).astype(np.int32)
  ids[:, 0] = v.special_id("[TEXT_LM]")
  seg = np.ones((2, 16), np.int32)
  return {"tokens": jnp.asarray(ids[:, :-1]), "segment_ids": jnp.asarray(seg),
          "positions": jnp.asarray(np.tile(np.arange(16, dtype=np.int32), (2, 1))),
          "speech_codes": jnp.zeros((2, 16, v.num_channels - 1), jnp.int32)}


def test_frozen_text_tower_is_bit_identical_without_optimizer_state():
  model = build(tiny_zipper())
  options = opt_lib.OptimizerOptions(freeze_towers=("text",), weight_decay=0.1)
  assert options.freeze_patterns == ("^text/", "^text_input/")
  graphdef, state, step = _state_and_step(model, options)
  # no optimizer moments for the frozen tower, moments for everything else
  moments = [param_path(p) for p, _ in jax.tree_util.tree_flatten_with_path(state.opt_state)[0]]
  assert not any("/text/" in m or "/text_input/" in m for m in moments)
  assert any("/speech/" in m for m in moments) and any("/text_cross/" in m for m in moments)
  probe = _text_only(model.cfg)
  text_logits = lambda params: nnx.merge(graphdef, params).heads.logits(  # noqa: E731
      nnx.merge(graphdef, params)(probe["tokens"], probe["segment_ids"], probe["positions"],
                                  probe["speech_codes"]))
  before_logits = np.asarray(jax.jit(text_logits)(state.params))
  before = _flat(state.params)
  for seed in range(3):
    state, metrics = step(state, zipper_batch(model.cfg, seed=seed))
    assert np.isfinite(metrics["loss"])
  after = _flat(state.params)
  for name in before:
    if name.startswith(("text/", "text_input/")):
      np.testing.assert_array_equal(after[name], before[name], err_msg=name)
  assert not np.array_equal(after["speech/decoder/blocks/attn/query/kernel"],
                            before["speech/decoder/blocks/attn/query/kernel"])
  assert after["text_cross/0/gate"] != 0          # the fusion trains
  # a text-only sequence never sees speech: the frozen text tower's outputs are unchanged
  np.testing.assert_array_equal(np.asarray(jax.jit(text_logits)(state.params)), before_logits)


def _loss_and_grads(graphdef):
  options = loss_lib.LossOptions(chunk_size=64, remat=False)
  return jax.value_and_grad(lambda p, b: loss_lib.lm_loss(nnx.merge(graphdef, p), b, options)[0])


def _assert_same(got, want, atol=1e-6):
  (l1, g1), (l0, g0) = got, want
  np.testing.assert_allclose(l1, l0, rtol=1e-5)
  for a, b in zip(jax.tree.leaves(g1), jax.tree.leaves(g0)):
    np.testing.assert_allclose(a, b, atol=atol, rtol=1e-4)


def test_sharded_zipper_equals_unsharded():
  # data x fsdp x tensor = 2 x 2 x 2: both towers' parameters on one mesh by their logical axes
  mesh = sharding.make_mesh({"data": 2, "fsdp": 2, "tensor": 2}, devices=jax.devices()[:8])
  model = randomize(build(tiny_zipper()), gate=0.5)
  batch = zipper_batch(model.cfg, b=4)
  graphdef, params = nnx.split(model, nnx.Param)
  want = jax.jit(_loss_and_grads(graphdef))(params, batch)
  rules = sharding.logical_axis_rules()
  shardings = sharding.state_shardings(params, mesh, rules)
  sharded = jax.device_put(params, shardings)
  assert any(not s.is_fully_replicated for s in jax.tree.leaves(shardings))
  sbatch = jax.device_put(batch, NamedSharding(mesh, P(("data", "fsdp"))))

  def step(p, b):
    with sharding.activation_sharding(mesh, rules):
      return _loss_and_grads(graphdef)(p, b)
  _assert_same(jax.jit(step)(sharded, sbatch), want)


def test_pallas_equals_xla_loss_and_gradients():
  cfg = tiny_zipper()
  batch = zipper_batch(cfg)
  xla = randomize(build(cfg), gate=0.5)
  graphdef, params = nnx.split(xla, nnx.Param)
  want = jax.jit(_loss_and_grads(graphdef))(params, batch)
  pallas = build(cfg.replace(attention_impl="pallas"))
  nnx.update(pallas, params)
  graphdef, params = nnx.split(pallas, nnx.Param)
  _assert_same(jax.jit(_loss_and_grads(graphdef))(params, batch), want, atol=2e-5)


def test_a_tower_restores_from_a_shared_model_of_its_shape():
  cfg = tiny_zipper()
  model = build(cfg)
  source = randomize(SpeechTextLM(cfg.tower("speech"), rngs=nnx.Rngs(params=5)), seed=5)
  n = copy_tower_params(model, "speech", source)
  assert n == len(jax.tree.leaves(nnx.state(model.speech, nnx.Param)))
  got, want = (_flat(nnx.state(m, nnx.Param).to_pure_dict()) for m in (model.speech, source))
  assert got.keys() == want.keys()
  for name in got:
    np.testing.assert_array_equal(got[name], want[name], err_msg=name)
  # at gate 0 the restored speech tower computes what its source computed alone, on speech-only rows
  v = cfg.vocab
  rng = np.random.default_rng(0)
  tokens = np.concatenate([np.full((1, 1), v.special_id("[SPEECH_LM]")),
                           rng.integers(v.speech_start, v.size, (1, 11))], 1).astype(np.int32)
  seg, pos = jnp.ones((1, 12), jnp.int32), jnp.arange(12, dtype=jnp.int32)[None]
  codes = jnp.asarray(rng.integers(0, 8, (1, 12, 2)), jnp.int32)
  logits = nnx.jit(lambda m, *a: m.logits(*a)[0])      # one program each, not op by op
  zl, sl = (logits(m, jnp.asarray(tokens), seg, pos, codes) for m in (model, source))
  # [SPEECH_LM] feeds the speech tower; positions 0.. are the speech stream's own
  np.testing.assert_allclose(zl, sl, rtol=1e-5, atol=1e-5)
  with pytest.raises(TowerInitError, match="text tower"):
    copy_tower_params(model, "text", source)      # the speech tower's shape is not the text tower's
