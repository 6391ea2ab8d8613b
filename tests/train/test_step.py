"""The train step: same result on any mesh, accumulation == large batch, NaN guard, freezing."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from slm_jax.models import loss as loss_lib
from slm_jax.train import loop, optimizer
from conftest import batches, mesh_of, tiny_config

# The last three cover every axis in the fast suite; pure data / data x fsdp run with -m slow.
MESHES = [
    pytest.param(dict(data=8), marks=pytest.mark.slow),
    pytest.param(dict(data=2, fsdp=4), marks=pytest.mark.slow),
    dict(fsdp=4, tensor=2), dict(data=2, fsdp=2, tensor=2), dict(fsdp=2, tensor=2, sequence=2),
]
LR = optimizer.learning_rate_schedule(peak_learning_rate=1e-2, warmup_steps=0, decay="constant")


def _opts(**kw):
  # A large Adam eps keeps the first update a smooth function of the gradient, so float-rounding
  # differences between meshes stay float-rounding small in the parameters.
  return optimizer.OptimizerOptions(eps=1e-3, **kw)


def _one_step(cfg, mesh_shape, num_microbatches=1, opts=None, seed=0, evaluate=False):
  """(params before, params after, metrics, state); with `evaluate`, + the eval step's metrics of
  the params before the step."""
  mesh = mesh_of(mesh_shape)
  run = loop.TrainRun(cfg, mesh=mesh, schedule=LR, num_microbatches=num_microbatches,
                      optimizer_options=opts or _opts())
  state = run.init_state()
  (batch,) = batches(cfg, mesh, seed=seed)
  before = jax.device_get(state.params)
  evaluated = (loss_lib.metrics_from_sums(jax.device_get(run.eval_sums(state.params, batch)))
               if evaluate else None)
  state, metrics = run.train_step(state, batch)
  out = before, jax.device_get(state.params), jax.device_get(metrics), state
  return out + (evaluated,) if evaluate else out


@pytest.fixture(scope="module")
def reference():
  return _one_step(tiny_config(), dict(data=1), evaluate=True)


def _mesh_id(m):
  return "x".join(f"{k}{v}" for k, v in m.items())


@pytest.mark.parametrize("mesh_shape", MESHES, ids=_mesh_id)
def test_same_step_on_every_mesh(reference, mesh_shape):
  _, ref_params, ref_metrics, _, _ = reference
  before, params, metrics, state = _one_step(tiny_config(), mesh_shape)
  np.testing.assert_allclose(metrics["loss"], ref_metrics["loss"], rtol=1e-5)
  np.testing.assert_allclose(metrics["grad_norm"], ref_metrics["grad_norm"], rtol=1e-4)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-7), params, ref_params)
  # the step really moved the parameters, and they live sharded on the mesh
  assert any(not np.array_equal(a, b) for a, b in zip(jax.tree.leaves(before), jax.tree.leaves(params)))
  leaves = jax.tree.leaves(state.params)
  split = any(x.sharding.shard_shape(x.shape) != x.shape for x in leaves)
  assert split == (mesh_shape.get("fsdp", 1) * mesh_shape.get("tensor", 1) > 1)


def test_grad_accumulation_equals_large_batch(reference):
  _, ref_params, ref_metrics, _, _ = reference
  _, params, metrics, _ = _one_step(tiny_config(), dict(data=1), num_microbatches=4)
  np.testing.assert_allclose(metrics["loss"], ref_metrics["loss"], rtol=1e-5)
  np.testing.assert_allclose(metrics["loss/text_ce"], ref_metrics["loss/text_ce"], rtol=1e-5)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-7), params, ref_params)


def test_eval_step_and_train_step_compute_the_same_loss(reference):
  """Both steps call models/loss.lm_loss: on the same params and batch their metrics agree."""
  _, _, trained, _, evaluated = reference    # train metrics are of the params before the update
  for key in ("loss/ce", "loss/text_ce", "loss/speech_ce", "accuracy", "tokens/weight"):
    np.testing.assert_allclose(evaluated[key], trained[key], rtol=1e-6, err_msg=key)
  np.testing.assert_allclose(trained["loss"], evaluated["loss/ce"], rtol=1e-6)  # no z-loss, K = 1


def test_frozen_parameters_are_bit_identical():
  opts = _opts(freeze_patterns=("^decoder/", "final_norm"))
  before, after, _, state = _one_step(tiny_config(), dict(fsdp=2), opts=opts)
  for group in ("decoder", "final_norm"):
    jax.tree.map(np.testing.assert_array_equal, before[group], after[group])
  assert not np.array_equal(before["heads"]["tied_embed"]["table"], after["heads"]["tied_embed"]["table"])
  # no optimizer moments for frozen parameters: only the embedding table has Adam state
  moments = [x for x in jax.tree.leaves(state.opt_state) if x.ndim > 0]
  assert {x.shape for x in moments} == {before["heads"]["tied_embed"]["table"].shape}


def test_nonfinite_step_is_skipped_and_counted():
  cfg = tiny_config()
  mesh = mesh_of(dict(data=2))
  run = loop.TrainRun(cfg, mesh=mesh, schedule=LR)
  state = run.init_state()
  good, = batches(cfg, mesh)
  bad = dict(good)
  bad["loss_weights"] = good["loss_weights"].at[0, :].set(jnp.nan)
  params0 = jax.device_get(state.params)
  state, m = run.train_step(state, bad)
  jax.tree.map(np.testing.assert_array_equal, jax.device_get(state.params), params0)
  assert int(m["nonfinite"]) == 1 and int(state.skipped) == 1 and int(state.skipped_in_row) == 1
  state, m = run.train_step(state, bad)
  assert int(state.skipped_in_row) == 2 and int(state.step) == 2
  state, m = run.train_step(state, good)
  assert int(m["nonfinite"]) == 0 and int(state.skipped_in_row) == 0 and int(state.skipped) == 2
  # the schedule counts applied updates only
  assert int(state.applied_steps) == 1
