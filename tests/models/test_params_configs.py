"""Parameter metadata, the gin model configs (abstract build, exact parameter counts), jit purity."""
import jax
import numpy as np
import pytest
from flax import nnx

from model_testing import make, random_batch, tiny
from slm_jax import configuration
from slm_jax.models import build as build_lib
from slm_jax.models.loss import LossOptions, lm_loss
from slm_jax.sharding import DEFAULT_RULES


def _params_with_axes(state):
  out = {}
  for path, var in jax.tree_util.tree_flatten_with_path(state, is_leaf=lambda x: isinstance(x, nnx.Variable))[0]:
    out[jax.tree_util.keystr(path)] = (var.get_value().shape, var.get_metadata().get("out_sharding"))
  return out


def test_every_parameter_has_logical_axes_from_the_rule_table():
  # Every kind of parameter: towers, K > 1 channel tables and heads, untied head, q/k/v biases.
  cfg = tiny(speech_codebook_sizes=(24, 8), tie_embeddings=False, qkv_bias=True,
             text_tower_layers=1, speech_tower_layers=1)
  params = _params_with_axes(nnx.state(build_lib.build_abstract(cfg), nnx.Param))
  known = {name for name, _ in DEFAULT_RULES}
  assert len(params) >= 20
  for path, (shape, axes) in params.items():
    assert axes is not None, f"{path} has no logical axes"
    assert len(axes) == len(shape), f"{path}: axes {axes} for shape {shape}"
    assert set(axes) <= known, f"{path}: axes {set(axes) - known} are not in sharding.DEFAULT_RULES"
    if "blocks" in path:
      assert axes[0] == "layers", f"{path}: stacked layer parameters lead with the layers axis"
  assert any("bias" in p for p in params) and any("channel_kernel" in p for p in params)


def _formula(v_text, speech, d, heads, kv, hd, mlp, layers, tied, pad):
  """Parameter count of the architecture, from its definition (docs/architecture.md + ModelConfig)."""
  vocab = 3 + 32 + v_text + speech[0]               # pad/eos/bos, 32 reserved, text, speech ch. 0
  vocab_padded = -(-vocab // pad) * pad
  attention = d * heads * hd + 2 * d * kv * hd + heads * hd * d
  block = attention + 3 * d * mlp + 2 * d           # SwiGLU (gate, up, down) + two RMSNorm scales
  extra = speech[1:]
  channels = sum(extra) * d + d * len(extra) * max(extra) if extra else 0
  return layers * block + vocab_padded * d * (1 if tied else 2) + d + channels


EXPECTED = {
    # file: (formula arguments, exact count)
    "tiny": ((256, (64,), 64, 4, 2, 16, 128, 2, True, 128), 98_624),
    "demo_14m": ((4096, (512,), 384, 6, 2, 64, 1024, 8, True, 128), 14_408_064),
    "demo": ((512, (16,) * 320, 192, 3, 1, 64, 512, 4, True, 128), 3_657_408),   # + CTC head
    "1b": ((128256, (16384,), 2048, 32, 8, 64, 8192, 16, True, 512), 1_269_893_120),
    "7b": ((32000, (2048,) * 8, 4096, 32, 32, 128, 11008, 32, False, 512), 6_874_730_496),
}


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_gin_model_configs_build_abstractly_with_exact_counts(name):
  configuration.parse([f"models/{name}.gin"])
  cfg = build_lib.config_from_gin()
  args, exact = EXPECTED[name]
  assert _formula(*args) == exact
  model = build_lib.build_abstract(cfg)
  leaves = jax.tree.leaves(nnx.state(model, nnx.Param))
  assert all(isinstance(x, jax.ShapeDtypeStruct) for x in leaves), "abstract build must not allocate"
  # CTC head: D x U outputs per position x (blank + characters, or + text ids).
  classes = 1 + (len(cfg.ctc_alphabet) or cfg.vocab.text_size)
  ctc_head = cfg.embed_dim * cfg.ctc_upsample * classes if cfg.asr_ctc else 0
  if name == "demo":
    assert ctc_head == 192 * 3 * (1 + 28)        # 3 outputs x (blank, space, ', a..z)
  assert build_lib.param_count(model) == exact + ctc_head
  if name in ("1b", "7b"):
    assert cfg.dtype == "bfloat16" and cfg.param_dtype == "float32"


def test_jitted_step_is_a_pure_function_of_graphdef_and_state():
  cfg = tiny()
  model = make(cfg)
  graphdef, state = nnx.split(model)
  traces = []

  @jax.jit
  def step(state, batch):
    traces.append(1)                      # runs only while tracing
    def loss_fn(s):
      return lm_loss(nnx.merge(graphdef, s), batch, LossOptions())[0]
    loss, grads = jax.value_and_grad(loss_fn)(state)
    return loss, jax.tree.map(lambda p, g: p - 0.1 * g, state, grads)

  loss1, state1 = step(state, random_batch(cfg, seed=10))
  loss2, state2 = step(state1, random_batch(cfg, seed=11))    # new arrays, same shapes
  assert len(traces) == 1, "the step retraced on new arrays"
  assert np.isfinite(float(loss1)) and np.isfinite(float(loss2))
  # Pure: the same inputs give the same outputs, and the inputs are not modified.
  loss1_again, _ = step(state, random_batch(cfg, seed=10))
  assert float(loss1_again) == float(loss1) and len(traces) == 1
  before = jax.tree.leaves(nnx.state(model, nnx.Param))
  assert all(np.array_equal(a, b) for a, b in zip(before, jax.tree.leaves(state)))
  changed = [not np.array_equal(a, b) for a, b in zip(jax.tree.leaves(state), jax.tree.leaves(state2))]
  assert all(changed)
