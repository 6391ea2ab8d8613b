"""Sequential speech read-out (ModelConfig.speech_readout_frames): a position's frames are chosen
one after another, each seeing the levels of the frame before it."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from model_testing import logits, make, random_batch, tiny
from slm_jax.configuration import ConfigError
from slm_jax.models.loss import LossOptions, lm_loss

K6 = (16,) * 6          # 3 frames of 2 bins (channel 0 opens frame 0)


@pytest.fixture(scope="module")
def model():
  return make(tiny(speech_codebook_sizes=K6, speech_readout_frames=3), seed=2)


def _hidden_and_level0(cfg, n=5, seed=0):
  h = jax.random.normal(jax.random.key(seed), (n, cfg.embed_dim))
  level0 = jax.random.randint(jax.random.key(seed + 1), (n,), 0, 16)
  return h, level0


def test_generation_choice_equals_argmax_of_teacher_forced_logits(model):
  """What generation picks frame by frame is what training scores given that same frame."""
  h, level0 = _hidden_and_level0(model.cfg)
  chosen = model.heads.choose_channels(h, level0, lambda lg, _: jnp.argmax(lg, -1))
  frame = jnp.concatenate([level0[:, None], chosen], -1)
  teacher = model.heads.channel_logits(h, frame)
  np.testing.assert_array_equal(np.asarray(jnp.argmax(teacher, -1)), np.asarray(chosen))


def test_each_frame_sees_the_previous_frame_only(model):
  h, level0 = _hidden_and_level0(model.cfg, n=1)
  frame = jnp.asarray([[3, 4, 5, 6, 7, 8]], jnp.int32)       # frames (3 4) (5 6) (7 8)
  base = model.heads.channel_logits(h, frame)                 # channels 1..5 (k - 1 below)
  for channel, changes in [(0, (2, 3)), (1, (2, 3)), (2, (4, 5)), (3, (4, 5)), (4, ()),
                           (5, ())]:
    other = model.heads.channel_logits(h, frame.at[0, channel].set(11))
    differs = [k for k in range(1, 6) if not np.allclose(other[0, k - 1], base[0, k - 1])]
    assert tuple(differs) == changes, (channel, differs)


def test_one_frame_read_out_ignores_the_frame_and_has_no_context_table():
  model = make(tiny(speech_codebook_sizes=K6), seed=2)
  assert model.heads.frame_context is None
  h, level0 = _hidden_and_level0(model.cfg)
  ref = model.heads.channel_logits(h)
  np.testing.assert_array_equal(np.asarray(model.heads.channel_logits(h, jnp.ones((5, 6), int))),
                                np.asarray(ref))
  chosen = model.heads.choose_channels(h, level0, lambda lg, _: jnp.argmax(lg, -1))
  np.testing.assert_array_equal(np.asarray(chosen), np.asarray(jnp.argmax(ref, -1)))


def test_loss_is_teacher_forced_on_the_target_frames(model):
  """The training loss's channel CE equals the CE of channel_logits given the target frames."""
  batch = random_batch(model.cfg, seed=4)
  _, sums = lm_loss(model, batch, LossOptions())
  h = model(batch["tokens"], batch["segment_ids"], batch["positions"], batch["speech_codes"])
  frame = jnp.concatenate([(batch["targets"] - model.cfg.vocab.speech_start)[..., None],
                           batch["target_speech_codes"]], -1)
  logp = jax.nn.log_softmax(model.heads.channel_logits(h, frame), -1)
  ce = -jnp.take_along_axis(logp, batch["target_speech_codes"][..., None], -1)[..., 0]
  speech_w = batch["loss_weights"] * model.cfg.vocab.is_speech(batch["targets"])
  np.testing.assert_allclose(np.asarray(sums["channel_ce"]),
                             np.asarray((ce * speech_w[..., None]).sum((0, 1))), rtol=1e-5)
  full, channel = logits(model, batch)                      # model.logits: its own next frames
  assert full.shape[:2] == channel.shape[:2] and bool(jnp.isfinite(channel).all())


def test_config_errors():
  with pytest.raises(ConfigError, match="divide"):
    tiny(speech_codebook_sizes=K6, speech_readout_frames=4)
  with pytest.raises(ConfigError, match=">= 1"):
    tiny(speech_codebook_sizes=K6, speech_readout_frames=0)
