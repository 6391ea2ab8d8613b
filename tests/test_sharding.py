"""Mesh construction and logical-axis rules (slm_jax/sharding.py)."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from jax.sharding import PartitionSpec as P

from slm_jax import sharding
from slm_jax.unified_vocab import UnifiedVocab
from slm_jax.models.config import ModelConfig
from slm_jax.models import build


def test_make_mesh_fills_and_orders_axes():
  mesh = sharding.make_mesh({"fsdp": -1, "tensor": 2})
  assert mesh.axis_names == sharding.MESH_AXES
  assert dict(mesh.shape) == {"data": 1, "fsdp": 4, "tensor": 2, "sequence": 1}
  assert sharding.make_mesh().shape["data"] == 8


@pytest.mark.parametrize("shape, match", [
    ({"data": 3}, "has 3 devices, but 8"),
    ({"data": -1, "fsdp": -1}, "at most one axis"),
    ({"model": 8}, "unknown mesh axes"),
    ({"data": 3, "fsdp": -1}, "do not divide"),
])
def test_make_mesh_errors_are_clear(shape, match):
  with pytest.raises(ValueError, match=match):
    sharding.make_mesh(shape)


def test_rules_reject_duplicates_and_unknown_axes():
  with pytest.raises(ValueError, match="appears twice"):
    sharding.logical_axis_rules((("embed", "fsdp"), ("embed", None)))
  with pytest.raises(ValueError, match="unknown mesh axis"):
    sharding.logical_axis_rules((("embed", "model"),))


def test_logical_to_spec_uses_each_mesh_axis_once():
  rules = sharding.logical_axis_rules()
  assert sharding.logical_to_spec(("batch", "length", "act_embed"), rules) == P(("data", "fsdp"), "sequence", None)
  assert sharding.logical_to_spec(("embed", "embed"), rules) == P("fsdp", None)
  with pytest.raises(KeyError, match="no rule"):
    sharding.logical_to_spec(("nonsense",), rules)


def test_non_dividing_axes_are_replicated():
  mesh = sharding.make_mesh({"fsdp": 4, "tensor": 2})
  s = sharding.named_sharding(mesh, ("embed", "kv_heads"), (6, 2), sharding.logical_axis_rules())
  assert s.spec == P(None, "tensor")


def test_state_shardings_shard_parameters_by_their_logical_axes():
  cfg = ModelConfig(vocab=UnifiedVocab(text_size=64, speech_codebook_sizes=(32,)), num_layers=1,
                    embed_dim=32, head_dim=8, mlp_dim=64, vocab_pad_multiple=8)
  _, abstract = nnx.split(build.build_abstract(cfg), nnx.Param)
  mesh = sharding.make_mesh({"fsdp": 4, "tensor": 2})
  sh = sharding.state_shardings(abstract, mesh).to_pure_dict()
  assert sh["decoder"]["blocks"]["mlp"]["up"]["kernel"].spec == P(None, "fsdp", "tensor")
  assert sh["heads"]["tied_embed"]["table"].spec == P("tensor", "fsdp")
  assert sh["final_norm"]["scale"].spec == P(None)


def test_constrain_is_a_noop_outside_the_context_and_pins_inside():
  x = jnp.ones((8, 4))
  assert sharding.constrain(x, ("batch", "act_embed")) is x
  mesh = sharding.make_mesh({"fsdp": -1})

  @jax.jit
  def f(a):
    with sharding.activation_sharding(mesh):
      return sharding.constrain(a * 2, ("batch", "act_embed"))

  y = f(x)
  assert y.sharding.is_equivalent_to(jax.sharding.NamedSharding(mesh, P("fsdp", None)), 2)
  np.testing.assert_array_equal(y, 2 * np.ones((8, 4)))
  with pytest.raises(ValueError, match="axes"):
    with sharding.activation_sharding(mesh):
      sharding.constrain(x, ("batch",))
