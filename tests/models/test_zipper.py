"""Zipper: the towers alone at gate 0, causality across the streams, the converter, the plan."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from model_testing import copy_params, flat, loss_and_grads
from slm_jax.configuration import ConfigError
from slm_jax.data.zipper_streams import zipper_streams
from slm_jax.models.build import build
from slm_jax.models.config import ModelConfig
from slm_jax.models.zipper import fusion_periods, fusion_plan, pair_towers, run_plan
from slm_jax.models.zipper_config import TOWERS, TowerConfig
from zipper_testing import randomize, tiny_zipper, zipper_batch


def _assert_same_grads(grads_a, grads_b, rtol, atol):
  """Every parameter's gradient equal (same paths, within tolerance)."""
  ga, gb = flat(grads_a), flat(grads_b)
  assert ga.keys() == gb.keys()
  for k in ga:
    np.testing.assert_allclose(ga[k], gb[k], rtol=rtol, atol=atol, err_msg=k)


def _hidden(model, batch):
  return nnx.jit(lambda m, t, s, p, c: m(t, s, p, c))(
      model, batch["tokens"], batch["segment_ids"], batch["positions"], batch.get("speech_codes"))


def test_converter_streams_number_each_tower_from_zero_per_document():
  cfg = tiny_zipper()
  v = cfg.vocab
  sp, tx, t = v.special_id("[SPEECH]"), v.special_id("[TEXT]"), v.text_start
  s0 = v.speech_start
  tokens = jnp.asarray([[2, tx, t, t, sp, s0, s0, tx, 2, sp, s0, t, 0]], jnp.int32)
  seg = jnp.asarray([[1] * 8 + [2] * 4 + [0]], jnp.int32)
  pos = jnp.asarray([list(range(8)) + list(range(4)) + [0]], jnp.int32)
  s = zipper_streams(tokens, seg, pos, v, cfg.zipper_speech_specials)
  np.testing.assert_array_equal(s.speech_BL[0], [0, 0, 0, 0, 1, 1, 1, 0, 0, 1, 1, 0, 0])
  np.testing.assert_array_equal(s.text_positions[0], [0, 1, 2, 3, 0, 0, 0, 4, 0, 0, 0, 1, 0])
  np.testing.assert_array_equal(s.speech_positions[0], [0, 0, 0, 0, 0, 1, 2, 0, 0, 0, 1, 0, 0])
  np.testing.assert_array_equal(s.text_segment_ids[0], [1, 1, 1, 1, 0, 0, 0, 1, 2, 0, 0, 2, 0])
  np.testing.assert_array_equal(s.speech_segment_ids[0], [0, 0, 0, 0, 1, 1, 1, 0, 0, 2, 2, 0, 0])


@pytest.mark.parametrize("depths,every", [((2, 3), (1, 2)), ((4, 4), (2, 2)), ((6, 2), (1, 1)),
                                          ((3, 5), (0, 1)), ((1, 1), (1, 1))])
def test_fusion_plan_runs_every_layer_and_cross_once_in_dependency_order(depths, every):
  plan, needed = fusion_plan(depths, every)
  done = {"text": 0, "speech": 0}
  crosses = {"text": 0, "speech": 0}
  for op in plan:
    if op[0] == "run":
      _, t, i, j = op
      assert i == done[t] and j > i
      done[t] = j
    else:
      _, t, c, src = op
      o = "speech" if t == "text" else "text"
      assert c == crosses[t] and done[t] == (c + 1) * every[depths.index(depths[0]) if t == "text" else 1]
      assert done[o] >= src and src in needed[o]
      crosses[t] += 1
  assert done == {"text": depths[0], "speech": depths[1]}
  assert crosses == {"text": depths[0] // every[0] if every[0] else 0,
                     "speech": depths[1] // every[1] if every[1] else 0}


@pytest.mark.parametrize("depths,every", [
    ((4, 4), (1, 1)), ((4, 2), (1, 1)), ((6, 2), (1, 1)), ((4, 4), (2, 1)), ((2, 3), (1, 2)),
    ((3, 5), (0, 1)), ((4, 4), (1, 0)), ((5, 3), (2, 3)), ((8, 4), (2, 2))])
def test_the_paired_plan_computes_what_the_plan_computes(depths, every):
  """pair_towers only merges and reorders independent ops: run symbolically, every tower's final
  state is the same expression."""
  plan, needed = fusion_plan(depths, every)
  layers = lambda t, i, j, x: f"{t}[{i}:{j}]({x})"  # noqa: E731
  cross = lambda t, c, x, src: f"{t}x{c}({x}, {src})"  # noqa: E731
  calls = []

  def layers2(i, j, h):
    calls.append("run2")
    return {t: layers(t, i, j, h[t]) for t in TOWERS}

  def cross2(cs, h, sources):
    calls.append("cross2")
    assert set(cs) == set(TOWERS)
    return {t: cross(t, cs[t], h[t], sources[t]) for t in TOWERS}
  start = {t: t for t in TOWERS}
  paired = pair_towers(plan)
  assert run_plan(paired, needed, start, layers, cross, layers2, cross2) == \
      run_plan(plan, needed, start, layers, cross)
  if every == (1, 1) and depths[0] == depths[1]:      # every layer and every cross pairs
    assert calls == ["run2", "cross2"] * depths[0]
  if (depths, every) == ((4, 2), (1, 1)):             # the speech layers pair, crosses partly
    assert calls == ["run2", "cross2", "cross2"]


@pytest.mark.parametrize("depths,every,periods", [
    ((4, 4), (1, 1), 4), ((4, 4), (2, 2), 2), ((4, 4), (1, 2), 2), ((4, 2), (2, 1), 2),
    ((4, 4), (4, 4), 1), ((4, 4), (1, 0), 4), ((2, 3), (1, 2), 1), ((3, 5), (0, 1), 1),
    ((6, 2), (1, 1), 1)])   # (6, 2): a period would read the speech state from before a cross
def test_fusion_periods(depths, every, periods):
  assert fusion_periods(depths, every) == periods


@pytest.mark.parametrize("text,speech", [((2, 1), (2, 1)), ((4, 2), (2, 1))])
def test_the_scan_over_periods_equals_the_unrolled_plan(text, speech):
  """scan_layers: the plan runs as a scan over its periods; unrolled, op by op. Same numbers."""
  base = tiny_zipper()
  cfg = ModelConfig(**{**base.__dict__,
                       "zipper_text": base.zipper_text._replace(num_layers=text[0], cross_every=text[1]),
                       "zipper_speech": base.zipper_speech._replace(num_layers=speech[0],
                                                                    cross_every=speech[1])})
  scanned = randomize(build(cfg), gate=0.6)
  unrolled = build(ModelConfig(**{**cfg.__dict__, "scan_layers": False}))
  assert fusion_periods(scanned.depths(), scanned.every()) == 2
  copy_params(scanned, unrolled)
  batch = zipper_batch(scanned.cfg)
  (loss_a, _), grads_a = loss_and_grads(scanned, batch)
  (loss_b, _), grads_b = loss_and_grads(unrolled, batch)
  np.testing.assert_allclose(float(loss_a), float(loss_b), rtol=1e-6)
  _assert_same_grads(grads_a, grads_b, rtol=2e-5, atol=2e-6)


def _one_head_layout(**kw):
  """Towers of different widths and the same head layout (4 heads, 2 kv heads, head dim 8)."""
  base = tiny_zipper(**kw)
  return ModelConfig(**{**base.__dict__, "zipper_text": TowerConfig(2, 32, 4, 2, 8, 64, 1, True),
                        "zipper_speech": TowerConfig(2, 24, 4, 2, 8, 48, 1, True)})


@pytest.mark.parametrize("scan,impl", [(True, "xla_blockwise"), (False, "xla"),
                                       pytest.param(True, "pallas", marks=pytest.mark.slow)])
def test_paired_towers_equal_each_tower_run_alone(scan, impl):
  """Towers of one head layout run each layer's two self-attentions, and the two cross-attentions
  of a fusion point, as one attention over the row (`paired_block`, `paired_cross_attention`):
  the same loss and gradients as one attention per tower, padding and packed documents included.
  Blockwise with 8-position blocks, so that it skips blocks under the paired segment ids."""
  import gin  # pylint: disable=import-outside-toplevel
  cfg = _one_head_layout(scan_layers=scan, attention_impl=impl)
  paired = randomize(build(cfg), gate=0.6)
  alone = build(cfg)
  copy_params(paired, alone)
  alone.paired = False
  plan = pair_towers(fusion_plan((1, 1) if scan else (2, 2), (1, 1))[0])
  assert {op[0] for op in plan} >= {"run2", "cross2"}
  batch = zipper_batch(cfg, l=32)
  pad = np.arange(32) >= 27               # row 1 ends in padding
  batch["segment_ids"] = batch["segment_ids"].at[1].set(np.where(pad, 0, batch["segment_ids"][1]))
  batch["positions"] = batch["positions"].at[1].set(np.where(pad, 0, batch["positions"][1]))
  batch["loss_weights"] = batch["loss_weights"].at[1].set(np.where(pad, 0, batch["loss_weights"][1]))
  with gin.unlock_config():
    gin.bind_parameter("blockwise_attention.block_size", 8)
  try:
    (loss_a, _), grads_a = loss_and_grads(paired, batch)
    (loss_b, _), grads_b = loss_and_grads(alone, batch)
  finally:
    with gin.unlock_config():
      gin.bind_parameter("blockwise_attention.block_size", 128)
  np.testing.assert_allclose(float(loss_a), float(loss_b), rtol=1e-6)
  _assert_same_grads(grads_a, grads_b, rtol=2e-5, atol=2e-6)


def test_paired_towers_sharded_equal_each_tower_run_alone_unsharded():
  """On a data x fsdp x tensor mesh (both towers' parameters sharded by their logical axes)."""
  from jax.sharding import NamedSharding, PartitionSpec  # pylint: disable=import-outside-toplevel
  from slm_jax import sharding  # pylint: disable=import-outside-toplevel
  from slm_jax.models.loss import LossOptions, lm_loss  # pylint: disable=import-outside-toplevel
  cfg = _one_head_layout()
  paired = randomize(build(cfg), gate=0.5)
  alone = build(cfg)
  copy_params(paired, alone)
  alone.paired = False
  batch = zipper_batch(cfg, b=4)
  (want, _), want_grads = loss_and_grads(alone, batch)
  mesh = sharding.make_mesh({"data": 2, "fsdp": 2, "tensor": 2}, devices=jax.devices()[:8])
  rules = sharding.logical_axis_rules()
  graphdef, state = nnx.split(paired)
  shardings = sharding.state_shardings(state, mesh, rules)
  assert any(not x.is_fully_replicated for x in jax.tree.leaves(shardings))

  def step(state, batch):     # traced here, under the mesh's activation rules
    with sharding.activation_sharding(mesh, rules):
      return jax.value_and_grad(lambda st: lm_loss(nnx.merge(graphdef, st), batch, LossOptions()),
                                has_aux=True)(state)
  (got, _), got_grads = jax.jit(step)(jax.device_put(state, shardings),
                                      jax.device_put(batch, NamedSharding(mesh, PartitionSpec(("data", "fsdp")))))
  np.testing.assert_allclose(float(got), float(want), rtol=1e-5)
  _assert_same_grads(got_grads, want_grads, rtol=1e-4, atol=1e-6)


def test_zipper_config_errors():
  with pytest.raises(ConfigError, match="zipper_text"):
    ModelConfig(architecture="zipper")
  with pytest.raises(ConfigError, match="architecture"):
    ModelConfig(architecture="towers")
  cfg = tiny_zipper()
  again = ModelConfig(**{**cfg.__dict__, "zipper_text": list(cfg.zipper_text),
                         "zipper_speech": dict(cfg.zipper_speech._asdict())})
  assert again == cfg     # model_config.json stores the towers as lists


def _alone(model, tower, batch):
  """Tower `tower` run by itself on its own positions, compacted (what it sees without Zipper)."""
  cfg = model.cfg
  s = model.streams(batch["tokens"], batch["segment_ids"], batch["positions"])
  member = np.asarray(s.speech_BL if tower == "speech" else ~s.speech_BL) & (np.asarray(batch["segment_ids"]) > 0)
  b, l = member.shape
  tok, seg, pos = (np.zeros((b, l), np.int32) for _ in range(3))
  codes = np.zeros(batch["speech_codes"].shape, np.int32)
  for r in range(b):
    idx = np.nonzero(member[r])[0]
    tok[r, :idx.size] = np.asarray(batch["tokens"])[r, idx]
    seg[r, :idx.size] = np.asarray(batch["segment_ids"])[r, idx]
    pos[r, :idx.size] = np.asarray(s.positions(tower))[r, idx]
    codes[r, :idx.size] = np.asarray(batch["speech_codes"])[r, idx]
  lm = model.tower(tower)
  mlp = model.text_input if tower == "text" else model.speech_input

  @nnx.jit
  def run(lm, mlp, tok, seg, pos, codes):
    x = lm.towers(tok, seg, pos, codes if tower == "speech" else None)
    x = lm.decoder(mlp(x), seg, pos)
    return lm.heads.logits(lm.final_norm(x))
  logits = np.asarray(run(lm, mlp, tok, seg, pos, codes))
  del cfg
  return member, logits


def test_gates_at_zero_each_tower_equals_itself_run_alone():
  model = randomize(build(tiny_zipper()), gate=0.0)
  batch = zipper_batch(model.cfg)
  logits = np.asarray(nnx.jit(lambda m, b: m.heads.logits(m(b["tokens"], b["segment_ids"],
                                                              b["positions"], b["speech_codes"])))(model, batch))
  for tower in ("text", "speech"):
    member, alone = _alone(model, tower, batch)
    assert member.sum() > 4
    for r in range(member.shape[0]):
      idx = np.nonzero(member[r])[0]
      np.testing.assert_allclose(logits[r, idx], alone[r, :idx.size], rtol=2e-5, atol=2e-5)
  # with open gates the towers do read each other
  randomize(model, gate=0.7)
  changed = np.asarray(nnx.jit(lambda m, b: m.heads.logits(m(b["tokens"], b["segment_ids"],
                                                               b["positions"], b["speech_codes"])))(model, batch))
  assert np.abs(changed - logits).max() > 1e-3


@pytest.mark.parametrize("tower", ["text", "speech"])
def test_cross_attention_never_sees_the_other_streams_future(tower):
  model = randomize(build(tiny_zipper()), gate=0.8)
  batch = zipper_batch(model.cfg, seed=3)
  s = model.streams(batch["tokens"], batch["segment_ids"], batch["positions"])
  member = np.asarray(s.speech_BL if tower == "speech" else ~s.speech_BL)[0]
  seg = np.asarray(batch["segment_ids"])[0]
  # a position of `tower` in the second document with earlier positions of both towers before it
  p = [i for i in range(member.size) if member[i] and seg[i] == 2 and 3 <= i < member.size - 2][0]
  v = model.cfg.vocab
  new = v.speech_start + 3 if tower == "speech" else v.text_start + 5
  if int(batch["tokens"][0, p]) == new:
    new += 1
  perturbed = dict(batch, tokens=batch["tokens"].at[0, p].set(new),
                   speech_codes=batch["speech_codes"].at[0, p].set((batch["speech_codes"][0, p] + 1) % 8))
  a, b = (model.heads.logits(_hidden(model, x)) for x in (batch, perturbed))
  a, b = np.asarray(a), np.asarray(b)
  np.testing.assert_array_equal(a[0, :p], b[0, :p])         # nothing earlier moves, either tower
  np.testing.assert_array_equal(a[1], b[1])                 # nor another row
  later_other = [i for i in range(p + 1, member.size) if not member[i] and seg[i] == 2]
  assert later_other and np.abs(a[0, later_other] - b[0, later_other]).max() > 1e-4


def test_loss_and_gradients_reach_both_towers_and_gates():
  model = build(tiny_zipper())
  batch = zipper_batch(model.cfg)
  (loss, sums), grads = loss_and_grads(model, batch)
  assert np.isfinite(loss) and sums["speech_weight"] > 0 and sums["text_weight"] > 0
  g = nnx.to_pure_dict(grads) if hasattr(nnx, "to_pure_dict") else grads.to_pure_dict()
  norm = lambda t: float(sum(jnp.abs(x).sum() for x in jax.tree.leaves(t)))  # noqa: E731
  for name in ("text", "speech"):
    assert norm(g[name]) > 0
  assert norm(g["text_cross"][0]["gate"]) > 0 and norm(g["speech_cross"][0]["gate"]) > 0
  # at gate 0 nothing flows into the cross-attention projections yet (the gate multiplies them)
  assert norm(g["text_cross"][0]["query"]) == 0


def test_ctc_head_sits_on_the_speech_tower():
  """ModelConfig.asr_ctc on a Zipper: the head is the speech tower's and its loss is models/ctc.py's
  over the speech tower's hidden states at the ASR row's speech frames; gradients reach it."""
  import optax  # pylint: disable=import-outside-toplevel
  from slm_jax.models import ctc  # pylint: disable=import-outside-toplevel
  from slm_jax.unified_vocab import BOS_ID, EOS_ID  # pylint: disable=import-outside-toplevel
  model = build(tiny_zipper(asr_ctc=True))
  v = model.cfg.vocab
  assert model.text.heads.ctc_kernel is None
  assert model.speech.heads.ctc_kernel.shape == (model.cfg.zipper_speech.embed_dim, v.text_size + 1)
  sp, tx = v.speech_start, v.text_start
  tokens = [BOS_ID, v.special_id("[ASR]"), v.special_id("[SPEECH]"), sp + 1, sp + 2, sp + 3, sp + 4,
            v.special_id("[TEXT]"), tx + 5, tx + 7, EOS_ID] + [0] * 5
  seg = [1] * 11 + [0] * 5
  weights = np.zeros(16, np.float32)
  weights[7:10] = 1.0
  arr = lambda x, d=jnp.int32: jnp.asarray([x], d)  # noqa: E731
  batch = {"tokens": arr(tokens), "segment_ids": arr(seg), "positions": arr(list(range(11)) + [0] * 5),
           "targets": arr(tokens[1:] + [0]), "loss_weights": arr(weights, jnp.float32),
           "speech_codes": jnp.zeros((1, 16, v.num_channels - 1), jnp.int32),
           "target_speech_codes": jnp.zeros((1, 16, v.num_channels - 1), jnp.int32)}
  hidden = _hidden(model, batch)
  sums = ctc.asr_ctc_sums(model, hidden, batch)
  logits = model.speech.heads.ctc_logits(hidden.speech[:, 3:7])[:, :, 0]   # four frames, U = 1
  expected = optax.ctc_loss(logits, jnp.zeros((1, 4)), jnp.asarray([[6, 8]]), jnp.zeros((1, 2)))
  np.testing.assert_allclose(float(sums["ctc"]), float(expected[0]), rtol=1e-5)
  (loss, sums), grads = loss_and_grads(model, batch, asr_ctc_weight=1.0)
  assert np.isfinite(loss) and float(sums["ctc_labels"]) == 2.0
  g = grads.to_pure_dict() if hasattr(grads, "to_pure_dict") else nnx.to_pure_dict(grads)
  assert float(jnp.abs(g["speech"]["heads"]["ctc_kernel"]).sum()) > 0


def test_a_zipper_training_checkpoint_exports_and_loads(tmp_path):
  """slm-export / slm-eval --workdir on a Zipper run: the cross-attentions' list indices in the
  parameter paths (text_cross/0/...) survive the training checkpoint, the export and the load."""
  import os  # pylint: disable=import-outside-toplevel
  from slm_jax import configuration, sharding  # pylint: disable=import-outside-toplevel
  from slm_jax.export import inference_checkpoint as ic  # pylint: disable=import-outside-toplevel
  from slm_jax.models import build as build_lib  # pylint: disable=import-outside-toplevel
  from slm_jax.train import checkpoint as ckpt_lib  # pylint: disable=import-outside-toplevel
  from slm_jax.train import loop  # pylint: disable=import-outside-toplevel
  shape = ["num_layers=2", "embed_dim=32", "num_heads=4", "num_kv_heads=2", "head_dim=8",
           "mlp_dim=64", "cross_every=1"]
  configuration.parse(["ablations/zipper.gin"], [
      "ModelConfig.vocab_pad_multiple=8", "ModelConfig.attention_impl='xla'",
      "UnifiedVocab.text_size=64", "UnifiedVocab.speech_codebook_sizes=(32, 16)",
      "ModelConfig.asr_ctc=True"] + [f"{t}/TowerConfig.{b}" for t in ("text", "speech")
                                     for b in shape], finalize=False)
  cfg = build_lib.config_from_gin()
  workdir = str(tmp_path / "run")
  run = loop.TrainRun(cfg, mesh=sharding.make_mesh({"fsdp": 1}, devices=jax.devices()[:1]))
  state = run.init_state()
  configuration.write_operative_config(workdir)
  cfg.vocab.save(workdir)
  ckpt = ckpt_lib.Checkpointer(os.path.join(workdir, "checkpoints"),
                               ckpt_lib.CheckpointOptions(save_every=1, async_save=False))
  ckpt.save(1, state, {"step": 0}, cfg.vocab)
  ckpt.close()
  ic.export_inference_checkpoint(workdir, str(tmp_path / "export"))
  model, _, _ = ic.load_inference_checkpoint(str(tmp_path / "export"))
  assert type(model).__name__ == "ZipperLM" and len(model.text_cross) == 2
  saved = jax.device_get(state.params)["speech_cross"][1]["query"]["kernel"]
  np.testing.assert_array_equal(np.asarray(model.speech_cross[1].query.kernel[...]), np.asarray(saved))
