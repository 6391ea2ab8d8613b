"""Each Zipper tower names its own logical axes: default rules shard it as before, per-tower rules
shard one tower differently, and the sharded Zipper still equals the unsharded one."""
import gin
import jax
import numpy as np
import pytest
from flax import nnx
from jax.sharding import NamedSharding, PartitionSpec as P

from model_testing import tiny
from slm_jax import configuration, sharding
from slm_jax.export import quantize
from slm_jax.models import build as build_lib
from slm_jax.models.loss import LossOptions, lm_loss
from slm_jax.models.lm import SpeechTextLM
from slm_jax.models.zipper_config import TowerConfig
from zipper_testing import randomize, tiny_zipper, zipper_batch


def _params(model):
  """{path: (shape, logical axes)} of every parameter."""
  leaves = jax.tree_util.tree_flatten_with_path(nnx.state(model, nnx.Param),
                                                is_leaf=lambda x: isinstance(x, nnx.Variable))[0]
  return {tuple(getattr(k, "key", getattr(k, "idx", k)) for k in path):
          (v.get_value().shape, v.get_metadata()["out_sharding"]) for path, v in leaves}


def _tower_of(path) -> str:
  return str(path[0]).split("_")[0]   # text, text_input, text_cross -> text


def _shared(axes):
  return tuple(sharding.shared_axis(a) for a in axes)


def _shardings(model, mesh, rules):
  return {k: sharding.named_sharding(mesh, axes, shape, rules)
          for k, (shape, axes) in _params(model).items()}


def _every_axis(tower, target):
  return [(sharding.tower_axis(tower, a), target) for a in sharding.PARAMETER_AXES]


# Text tower FSDP over all 8 devices (no tensor parallelism); speech tower replicated.
_TEXT_FSDP8 = [("text_embed", ("data", "fsdp", "tensor"))] + [
    row for row in _every_axis("text", None) if row[0] != "text_embed"]
_SPEECH_REPLICATED = _every_axis("speech", None)


@pytest.fixture(scope="module")
def zipper():
  cfg = tiny_zipper(asr_ctc=True, tie_embeddings=False, qkv_bias=True)
  return build_lib.build_abstract(cfg)


def test_every_zipper_parameter_names_its_tower(zipper):
  params = _params(zipper)
  known = {name for name, _ in sharding.DEFAULT_RULES}
  towers = {path[0] for path in params}
  assert towers == {"text", "speech", "text_input", "speech_input", "text_cross", "speech_cross"}
  for path, (shape, axes) in params.items():
    assert len(axes) == len(shape), path
    if path[-1] == "gate":                        # the cross-attention's scalar gate
      continue
    named = [a for a in axes if a is not None]
    assert named, f"{path} has no logical axes"
    assert all(a.startswith(_tower_of(path) + "_") and a in known for a in named), (path, axes)
    if "blocks" in path:
      assert axes[0] == f"{_tower_of(path)}_layers", path
  # the shared model keeps the shared names (its checkpoints, HF import/export read them)
  for path, (_, axes) in _params(build_lib.build_abstract(tiny())).items():
    assert _shared(axes) == axes, path


def test_tower_axis_names_and_their_rules():
  assert sharding.tower_axis("text", "kv_heads") == "text_kv_heads"
  assert sharding.shared_axis("speech_head_dim") == "head_dim"
  assert sharding.shared_axis("act_embed") == "act_embed" and sharding.shared_axis(None) is None
  with pytest.raises(ValueError, match="not a parameter axis"):
    sharding.tower_axis("text", "text_embed")
  table = dict(sharding.logical_axis_rules())
  for tower in sharding.TOWER_PREFIXES:
    for name in sharding.PARAMETER_AXES:
      assert table[sharding.tower_axis(tower, name)] == table[name]
  # a table written for the shared model shards both towers as it shards the shared model
  custom = dict(sharding.logical_axis_rules((("embed", None), ("mlp", "fsdp"), ("batch", "data"))))
  assert custom["text_embed"] is None and custom["speech_mlp"] == "fsdp"
  assert "text_batch" not in custom
  over = dict(sharding.logical_axis_rules(overrides=[("speech_embed", None)]))
  assert over["speech_embed"] is None and over["text_embed"] == over["embed"] == "fsdp"
  with pytest.raises(ValueError, match="lacks"):
    sharding.logical_axis_rules(overrides=[("speach_embed", None)])
  with pytest.raises(ValueError, match="appears twice in the overrides"):
    sharding.logical_axis_rules(overrides=[("text_mlp", None), ("text_mlp", "tensor")])
  with pytest.raises(ValueError, match="unknown mesh axis"):
    sharding.logical_axis_rules(overrides=[("text_mlp", "model")])


def test_gin_overrides_one_tower():
  # the examples of docs/architecture.md ("Zipper", Sharding)
  configuration.parse(["mesh/fsdp.gin"],
                      ["logical_axis_rules.overrides = [('speech_embed', None)]"])
  table = dict(sharding.logical_axis_rules())
  assert table["speech_embed"] is None and table["text_embed"] == table["embed"] == "fsdp"
  gin.clear_config()
  configuration.parse(["mesh/fsdp_tensor.gin"], [
      "logical_axis_rules.overrides = [('speech_heads', None), ('speech_kv_heads', None), "
      "('speech_mlp', None), ('speech_vocab', None)]"])
  table = dict(sharding.logical_axis_rules())
  assert table["speech_mlp"] is None and table["text_mlp"] == table["mlp"] == "tensor"
  assert table["speech_embed"] == "fsdp"


def test_default_rules_shard_each_tower_as_before(zipper):
  mesh = sharding.make_mesh({"data": 1, "fsdp": 4, "tensor": 2})
  rules = sharding.logical_axis_rules()
  params = _params(zipper)
  got = _shardings(zipper, mesh, rules)
  for path, (shape, axes) in params.items():      # the shared names give the same shardings
    assert got[path] == sharding.named_sharding(mesh, _shared(axes), shape, rules), path
  for tower in ("text", "speech"):                # and each backbone is sharded like a shared model
    alone = nnx.eval_shape(lambda t=tower: SpeechTextLM(zipper.cfg.tower(t), rngs=nnx.Rngs(0)))
    want = _shardings(alone, mesh, rules)
    mine = {k[1:]: s for k, s in got.items() if k[0] == tower}
    assert mine and all(s == want[k] for k, s in mine.items())
    assert any(not s.is_fully_replicated for s in mine.values())


@pytest.mark.parametrize("tower, overrides", [("speech", _SPEECH_REPLICATED),
                                              ("text", _TEXT_FSDP8)])
def test_one_towers_rules_change_only_its_shardings(zipper, tower, overrides):
  mesh = sharding.make_mesh({"data": 2, "fsdp": 2, "tensor": 2})
  before = _shardings(zipper, mesh, sharding.logical_axis_rules())
  after = _shardings(zipper, mesh, sharding.logical_axis_rules(overrides=overrides))
  params = _params(zipper)
  changed = {k for k in before if before[k] != after[k]}
  assert changed and all(_tower_of(k) == tower for k in changed)
  assert {_tower_of(k) for k in before} == {"text", "speech"}
  mine = {k: s for k, s in after.items() if _tower_of(k) == tower}
  if tower == "speech":
    assert all(s.is_fully_replicated for s in mine.values())
  else:   # every text parameter with a width axis is split 8 ways along it, nothing else is split
    for k, s in mine.items():
      axes = params[k][1]
      want = tuple(("data", "fsdp", "tensor") if a == "text_embed" else None for a in axes)
      assert tuple(s.spec) + (None,) * (len(axes) - len(s.spec)) == want, k


def test_int8_export_quantizes_zipper_weights_as_shared_ones(zipper):
  reduce = {k: quantize.reduction_axes(k[-1], axes) for k, (_, axes) in _params(zipper).items()}
  for k, (_, axes) in _params(zipper).items():
    assert reduce[k] == quantize.reduction_axes(k[-1], _shared(axes)), k
  assert reduce[("text", "decoder", "blocks", "attn", "out", "kernel")] == (1, 2)
  assert reduce[("speech_cross", 0, "key", "kernel")] == (0,)


def test_sharded_zipper_with_per_tower_rules_equals_unsharded():
  # speech tower replicated, text tower FSDP over all 8 devices; the batch over data x fsdp.
  # One layer per tower and one speech channel keep the two compilations small.
  cfg = tiny(architecture="zipper", zipper_text=TowerConfig(1, 32, 4, 2, 8, 64, 1, True),
             zipper_speech=TowerConfig(1, 24, 2, 1, 8, 48, 1, True))
  model = randomize(build_lib.build(cfg), gate=0.5)
  batch = zipper_batch(cfg, b=4, l=8)
  graphdef, params = nnx.split(model, nnx.Param)
  options = LossOptions(chunk_size=64, remat=False)
  loss_and_grads = jax.value_and_grad(lambda p, b: lm_loss(nnx.merge(graphdef, p), b, options)[0])
  want_loss, want_grads = jax.jit(loss_and_grads)(params, batch)

  mesh = sharding.make_mesh({"data": 2, "fsdp": 2, "tensor": 2})
  rules = sharding.logical_axis_rules(overrides=_TEXT_FSDP8 + _SPEECH_REPLICATED)
  shardings = sharding.state_shardings(params, mesh, rules)
  leaves = jax.tree_util.tree_flatten_with_path(shardings.to_pure_dict())[0]
  text = [s for p, s in leaves if str(p[0].key).startswith("text")]
  speech = [s for p, s in leaves if str(p[0].key).startswith("speech")]
  assert any(("data", "fsdp", "tensor") in tuple(s.spec) for s in text)   # split 8 ways
  assert all(s.is_fully_replicated for s in speech)

  def step(p, b):
    with sharding.activation_sharding(mesh, rules):
      return loss_and_grads(p, b)
  sbatch = jax.device_put(batch, NamedSharding(mesh, P(("data", "fsdp"))))
  loss, grads = jax.jit(step)(jax.device_put(params, shardings), sbatch)
  np.testing.assert_allclose(loss, want_loss, rtol=1e-5)
  leaves = jax.tree_util.tree_flatten_with_path(grads)[0]
  for (path, g), w in zip(leaves, jax.tree.leaves(want_grads)):
    np.testing.assert_allclose(g, w, atol=1e-6, rtol=1e-4, err_msg=jax.tree_util.keystr(path))
