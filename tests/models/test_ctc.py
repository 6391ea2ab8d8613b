"""The auxiliary CTC loss of paired (ASR, TTS) examples (models/ctc.py) on hand-made packed rows."""
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from model_testing import make, tiny
from slm_jax.configuration import ConfigError
from slm_jax.models import ctc
from slm_jax.models import loss as loss_lib
from slm_jax.unified_vocab import BOS_ID, EOS_ID


def _row(v, with_tts: bool):
  """[BOS ASR SPEECH s s s s TEXT t1 t2 EOS] (+ [BOS TTS TEXT t3 SPEECH s s EOS]), padded to 24."""
  sp, tx = v.speech_start, v.text_start
  asr = [BOS_ID, v.special_id("[ASR]"), v.special_id("[SPEECH]"), sp + 1, sp + 2, sp + 3, sp + 4,
         v.special_id("[TEXT]"), tx + 5, tx + 7, EOS_ID]
  tts = [BOS_ID, v.special_id("[TTS]"), v.special_id("[TEXT]"), tx + 3, v.special_id("[SPEECH]"),
         sp + 5, sp + 6, EOS_ID] if with_tts else []
  tokens = asr + tts
  seg = [1] * len(asr) + [2] * len(tts)
  n = 24
  tokens, seg = tokens + [0] * (n - len(tokens)), seg + [0] * (n - len(seg))
  targets = tokens[1:] + [0]
  weights = np.zeros(n, np.float32)
  weights[7:10] = 1.0                          # ASR answer: t1, t2, EOS
  if with_tts:
    weights[15:18] = 1.0                       # TTS answer: s, s, EOS
  for i in range(n - 1):                       # a target in the next segment is never trained
    if seg[i + 1] != seg[i]:
      weights[i] = 0.0
  arr = lambda x, d=jnp.int32: jnp.asarray([x], d)
  return {"tokens": arr(tokens), "segment_ids": arr(seg), "targets": arr(targets),
          "loss_weights": arr(weights, jnp.float32)}


@pytest.fixture(scope="module")
def model():
  return make(tiny(asr_ctc=True))


def test_tagged_segments_mark_the_segments_holding_a_tag(model):
  v = model.cfg.vocab
  b = _row(v, with_tts=True)
  mask = np.asarray(ctc.tagged_segments(b["tokens"], b["segment_ids"], [v.special_id("[ASR]")]))
  np.testing.assert_array_equal(mask[0], [True] * 11 + [False] * 13)
  both = ctc.tagged_segments(b["tokens"], b["segment_ids"],
                             [v.special_id("[ASR]"), v.special_id("[TTS]")])
  np.testing.assert_array_equal(np.asarray(both)[0], [True] * 19 + [False] * 5)


def test_ctc_sums_equal_optax_on_the_paired_frames_and_transcripts(model):
  v = model.cfg.vocab
  hidden = jax.random.normal(jax.random.key(1), (1, 24, model.cfg.embed_dim))
  alone = ctc.asr_ctc_sums(model, hidden, _row(v, with_tts=False))
  logits = model.heads.ctc_logits(hidden[:, 3:7])[:, :, 0]      # the four ASR speech frames (U = 1)
  expected = optax.ctc_loss(logits, jnp.zeros((1, 4)), jnp.asarray([[6, 8]]), jnp.zeros((1, 2)))
  np.testing.assert_allclose(float(alone["ctc"]), float(expected[0]), rtol=1e-5)
  assert float(alone["ctc_labels"]) == 2.0                      # t1, t2; not EOS or markers
  # With the TTS segment: its two frames join the ASR frames, its text (t3) the labels, in order.
  both = ctc.asr_ctc_sums(model, hidden, _row(v, with_tts=True))
  frames = jnp.concatenate([hidden[:, 3:7], hidden[:, 16:18]], axis=1)
  expected = optax.ctc_loss(model.heads.ctc_logits(frames)[:, :, 0], jnp.zeros((1, 6)),
                            jnp.asarray([[6, 8, 4]]), jnp.zeros((1, 3)))
  np.testing.assert_allclose(float(both["ctc"]), float(expected[0]), rtol=1e-5)
  assert float(both["ctc_labels"]) == 3.0


def test_rows_without_paired_examples_contribute_nothing(model):
  v = model.cfg.vocab
  b = _row(v, with_tts=True)
  lm = v.special_id("[SPEECH_LM]")
  b = dict(b, tokens=jnp.where(jnp.isin(b["tokens"], jnp.asarray(
      [v.special_id("[ASR]"), v.special_id("[TTS]")])), lm, b["tokens"]))
  hidden = jax.random.normal(jax.random.key(2), (1, 24, model.cfg.embed_dim))
  sums = ctc.asr_ctc_sums(model, hidden, b)
  assert float(sums["ctc"]) == 0.0 and float(sums["ctc_labels"]) == 0.0


def test_lm_loss_adds_the_weighted_ctc_and_trains_the_head(model):
  v = model.cfg.vocab
  b = _row(v, with_tts=True)
  b["positions"] = jnp.asarray([list(range(11)) + list(range(8)) + [0] * 5], jnp.int32)
  plain, sums = loss_lib.lm_loss(model, b, loss_lib.LossOptions())
  with_ctc, sums_ctc = loss_lib.lm_loss(model, b, loss_lib.LossOptions(asr_ctc_weight=0.5))
  w = float(b["loss_weights"].sum())
  np.testing.assert_allclose(float(with_ctc), float(plain) + 0.5 * float(sums_ctc["ctc"]) / w,
                             rtol=1e-5)
  assert "ctc" not in sums and loss_lib.metrics_from_sums(sums_ctc)["loss/asr_ctc"] > 0
  from flax import nnx
  grads = nnx.grad(lambda m: loss_lib.lm_loss(m, b, loss_lib.LossOptions(asr_ctc_weight=1.0))[0])(
      model)
  assert float(jnp.abs(grads.heads.ctc_kernel[...]).sum()) > 0


def test_ctc_weight_without_a_head_is_a_config_error():
  model = make(tiny())
  b = _row(model.cfg.vocab, with_tts=False)
  b["positions"] = jnp.asarray([list(range(24))], jnp.int32)
  with pytest.raises(ConfigError, match="asr_ctc"):
    loss_lib.lm_loss(model, b, loss_lib.LossOptions(asr_ctc_weight=1.0))


def test_ctc_tags_choose_the_examples_the_loss_reads(model):
  v = model.cfg.vocab
  hidden = jax.random.normal(jax.random.key(3), (1, 24, model.cfg.embed_dim))
  asr_only = ctc.asr_ctc_sums(model, hidden, _row(v, with_tts=True), tags=("[ASR]",))
  alone = ctc.asr_ctc_sums(model, hidden, _row(v, with_tts=False))
  np.testing.assert_allclose(float(asr_only["ctc"]), float(alone["ctc"]), rtol=1e-6)
  assert float(asr_only["ctc_labels"]) == 2.0                   # the TTS prompt's t3 left out
  b = _row(v, with_tts=True)
  b["positions"] = jnp.asarray([list(range(11)) + list(range(8)) + [0] * 5], jnp.int32)
  opts = loss_lib.LossOptions(asr_ctc_weight=1.0, ctc_tags=["[ASR]"])
  assert opts.ctc_tags == ("[ASR]",)
  assert float(loss_lib.lm_loss(model, b, opts)[1]["ctc_labels"]) == 2.0
  for tags, match in ((("[ASR]", "[NOPE]"), "unknown special"), ((), "is empty")):
    with pytest.raises(ConfigError, match=match):
      loss_lib.lm_loss(model, b, loss_lib.LossOptions(asr_ctc_weight=1.0, ctc_tags=tags))
