"""Character-level CTC (ModelConfig.ctc_alphabet / ctc_upsample, models/ctc_spelling.py): the
targets spell the transcript's text ids, each speech frame gives U outputs, and decoding reads
characters back."""
import os
import sys

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

from model_testing import make, tiny
from slm_jax.configuration import ConfigError
from slm_jax.inference import ctc_decoding, joint_decoding
from slm_jax.models import ctc, ctc_spelling
from slm_jax.models import loss as loss_lib
from slm_jax.models.heads import OutputHeads

sys.path.insert(0, os.path.dirname(__file__))
from test_ctc import _row  # noqa: E402  pylint: disable=wrong-import-position

ALPHABET = " abcdeio"


class _Pieces:
  """A 40-id text vocabulary whose ids spell: 3 -> " a", 5 -> "bee", 7 -> "x!" (not in the
  alphabet: dropped), the rest nothing."""
  def piece_spellings(self):
    out = [""] * 40
    out[3], out[5], out[7] = " a", "bee", "cx!"
    return out


@pytest.fixture(scope="module")
def spelling():
  return ctc_spelling.spelling_from_vocab(_Pieces(), ALPHABET, text_size=40)


def _model(u=3):
  return make(tiny(asr_ctc=True, ctc_alphabet=ALPHABET, ctc_upsample=u))


def test_the_spelling_table_holds_each_ids_characters(spelling):
  assert spelling.num_classes == 9 and spelling.dropped == "!x"
  assert spelling.spellings[3] == (1, 2) and spelling.spellings[5] == (3, 6, 6)
  assert spelling.spellings[7] == (4,) and spelling.spellings[0] == ()
  table = spelling.table()
  assert table.shape == (40, 3) and table[5].tolist() == [3, 6, 6] and table[3].tolist() == [1, 2, 0]
  assert ctc_spelling.decode(ALPHABET, spelling.spell([3, 5, 3, 7])) == "abee ac"
  assert ctc_spelling.decode(" ab", [2, 1, 1, 3, 0, 9]) == "a b"    # spaces collapse; 0, 9 skipped


def test_char_ctc_equals_optax_on_the_upsampled_frames_and_spelled_transcripts(spelling):
  model = _model(u=3)
  v = model.cfg.vocab
  hidden = jax.random.normal(jax.random.key(1), (1, 24, model.cfg.embed_dim))
  # ASR: four frames (3..6) and text ids 5, 7 -> "bee" "c"; TTS: two frames (16, 17), id 3 -> " a".
  sums = ctc.asr_ctc_sums(model, hidden, _row(v, with_tts=True), spelling=spelling)
  frames = jnp.concatenate([hidden[:, 3:7], hidden[:, 16:18]], axis=1)        # [1, 6, D]
  logits = model.heads.ctc_logits(frames)
  assert logits.shape == (1, 6, 3, 9)
  labels = jnp.asarray([[3, 6, 6, 4, 1, 2]])
  expected = optax.ctc_loss(logits.reshape(1, 18, 9), jnp.zeros((1, 18)), labels,
                            jnp.zeros((1, 6)))
  np.testing.assert_allclose(float(sums["ctc"]), float(expected[0]), rtol=1e-5)
  assert float(sums["ctc_labels"]) == 6.0
  # The outputs of a frame are in time order: reversing them within a frame changes the loss.
  flipped = optax.ctc_loss(logits[:, :, ::-1].reshape(1, 18, 9), jnp.zeros((1, 18)), labels,
                           jnp.zeros((1, 6)))
  assert abs(float(flipped[0]) - float(expected[0])) > 1e-3


def test_lm_loss_trains_the_character_head(spelling):
  model = _model(u=2)
  b = _row(model.cfg.vocab, with_tts=True)
  b["positions"] = jnp.asarray([list(range(11)) + list(range(8)) + [0] * 5], jnp.int32)
  options = loss_lib.LossOptions(asr_ctc_weight=1.0, ctc_spelling=spelling)
  loss, sums = loss_lib.lm_loss(model, b, options)
  assert np.isfinite(float(loss)) and float(sums["ctc_labels"]) == 6.0
  grads = nnx.grad(lambda m: loss_lib.lm_loss(m, b, options)[0])(model)
  assert model.heads.ctc_kernel.shape == (model.cfg.embed_dim, 2 * 9)
  assert float(jnp.abs(grads.heads.ctc_kernel[...]).sum()) > 0


def test_configuration_errors_name_the_fix(spelling):
  assert make(tiny(ctc_alphabet=ALPHABET)).heads.ctc_kernel is None   # no head: nothing to shape
  with pytest.raises(ConfigError, match="repeats"):
    tiny(asr_ctc=True, ctc_alphabet="abca")
  with pytest.raises(ConfigError, match="ctc_upsample"):
    tiny(asr_ctc=True, ctc_upsample=0)
  model = _model()
  b = _row(model.cfg.vocab, with_tts=False)
  b["positions"] = jnp.asarray([list(range(24))], jnp.int32)
  with pytest.raises(ConfigError, match="LossOptions.ctc_spelling"):
    loss_lib.lm_loss(model, b, loss_lib.LossOptions(asr_ctc_weight=1.0))
  other = ctc_spelling.spelling_from_vocab(_Pieces(), " abcdeiou", text_size=40)
  with pytest.raises(ConfigError, match="one macro"):
    loss_lib.lm_loss(model, b, loss_lib.LossOptions(asr_ctc_weight=1.0, ctc_spelling=other))
  with pytest.raises(ConfigError, match="text_size=30"):
    ctc_spelling.spelling_from_vocab(_Pieces(), ALPHABET, text_size=30)
  longer = ctc_spelling.spelling_from_vocab(_Pieces(), ALPHABET, text_size=48)
  with pytest.raises(ConfigError, match="spells 48 text ids"):
    loss_lib.lm_loss(model, b, loss_lib.LossOptions(asr_ctc_weight=1.0, ctc_spelling=longer))
  shorter = ctc_spelling.CtcSpelling(ALPHABET, spelling.spellings[:8])  # the rest spell nothing
  loss, _ = loss_lib.lm_loss(model, b, loss_lib.LossOptions(asr_ctc_weight=1.0,
                                                             ctc_spelling=shorter))
  assert np.isfinite(float(loss))


class _Session:
  def __init__(self, model):
    self.model, self.vocab = model, model.cfg.vocab


def test_ctc_transcribe_reads_characters_from_every_output(monkeypatch):
  # U = 2: output (frame t, slot s) says class PATTERN[2t + s].
  pattern = [2, 0, 3, 3, 0, 1, 4, 4, 6, 0, 6, 0]        # a, b, " ", c, e, e -> "ab cee"
  def head(self, x_BLD):
    b, l = x_BLD.shape[:2]
    classes = jnp.asarray((pattern * l)[:2 * l]).reshape(l, 2)
    # Frames start at position 3 of the ASR prompt: shift the pattern there.
    classes = jnp.roll(classes, 3, axis=0)
    one_hot = jnp.where(classes[..., None] == jnp.arange(self.cfg.ctc_classes), 5.0, 0.0)
    return jnp.broadcast_to(one_hot, (b, l, 2, self.cfg.ctc_classes))
  monkeypatch.setattr(OutputHeads, "ctc_logits", head)
  ctc_decoding._forward.cache_clear()   # pylint: disable=protected-access
  try:
    out = ctc_decoding.ctc_transcribe(_Session(_model(u=2)), [np.ones((6, 1), np.int32),
                                                              np.ones((2, 1), np.int32)],
                                      batch_size=2, bucket=16)
  finally:
    ctc_decoding._forward.cache_clear()   # pylint: disable=protected-access
  assert out == ["ab cee", "ab"]
