"""Speech-history dropout (LossOptions.speech_history_dropout): while training, continued speech
frames (a TTS answer's) enter the model as zero vectors with a given probability."""
import os
import sys

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

from model_testing import make, random_batch, tiny
from zipper_testing import tiny_zipper, zipper_batch
from slm_jax.configuration import ConfigError
from slm_jax.models import loss as loss_lib
from slm_jax.train import step as step_lib
from slm_jax.train.state import TrainState

sys.path.insert(0, os.path.dirname(__file__))
from test_ctc import _row  # noqa: E402  pylint: disable=wrong-import-position


def _continued(v, batch):
  return (np.asarray(v.is_speech(batch["tokens"])) & np.asarray(v.is_speech(batch["targets"]))
          & (np.asarray(batch["loss_weights"]) > 0))


def test_only_continued_speech_frames_are_dropped():
  v = tiny().vocab
  row = _row(v, with_tts=True)      # ASR prompt frames 3..6 (no weight); TTS answer frames 16, 17
  hit = np.zeros((1, 24), bool)
  for seed in range(40):
    hit |= np.asarray(loss_lib.speech_history_drops(row, v, 0.9, jax.random.key(seed)))
  assert np.flatnonzero(hit[0]).tolist() == [16]     # frame 17's target is EOS, 16's is speech
  assert _continued(v, row)[0].nonzero()[0].tolist() == [16]
  batch = random_batch(tiny(), seed=3, b=8, l=64)
  drops = np.asarray(loss_lib.speech_history_drops(batch, v, 0.5, jax.random.key(0)))
  continued = _continued(v, batch)
  assert not (drops & ~continued).any()
  assert 0.35 < drops.sum() / continued.sum() < 0.65


def _hidden(model, batch, dropped):
  return model(batch["tokens"], batch["segment_ids"], batch["positions"], batch.get("speech_codes"),
               dropped_BL=dropped)


@pytest.mark.parametrize("zipper", [False, True], ids=["shared", "zipper"])
def test_a_dropped_frame_is_hidden_from_the_model(zipper):
  cfg = tiny_zipper() if zipper else tiny(speech_codebook_sizes=(24, 16, 8))
  model = make(cfg)
  batch = dict(zipper_batch(cfg) if zipper else random_batch(cfg))
  is_speech = np.asarray(cfg.vocab.is_speech(batch["tokens"]))
  b, p = map(int, np.argwhere(is_speech)[2])
  dropped = np.zeros(is_speech.shape, bool)
  dropped[b, p] = True
  changed = dict(batch)                      # another frame at the dropped position
  changed["tokens"] = batch["tokens"].at[b, p].set(
      cfg.vocab.speech_start + (batch["tokens"][b, p] - cfg.vocab.speech_start + 5) % 24)
  changed["speech_codes"] = (batch["speech_codes"].at[b, p].add(3)
                             % jnp.asarray(cfg.vocab.extra_codebook_sizes))
  def leaves(h):    # each tower's hidden states at its own positions (Zipper) or all of them
    if not zipper:
      return [h]
    mine = h.speech_BL[..., None]
    return [jnp.where(mine, 0, h.text), jnp.where(mine, h.speech, 0)]
  a, c = leaves(_hidden(model, batch, dropped)), leaves(_hidden(model, changed, dropped))
  for x, y in zip(a, c):
    np.testing.assert_allclose(np.asarray(x), np.asarray(y), atol=1e-6)
  full_a, full_c = leaves(_hidden(model, batch, None)), leaves(_hidden(model, changed, None))
  assert any(not np.allclose(np.asarray(x), np.asarray(y)) for x, y in zip(full_a, full_c))


def _state(model):
  _, params = nnx.split(model)
  tx = optax.sgd(0.0)
  return TrainState(params=params, opt_state=tx.init(params), step=jnp.zeros((), jnp.int32),
                    rng=jax.random.PRNGKey(1), skipped=jnp.zeros((), jnp.int32),
                    skipped_in_row=jnp.zeros((), jnp.int32)), tx


def _batch_with_tts_answers(cfg):
  """A random batch, mostly speech: most weighted positions are continued frames."""
  return dict(random_batch(cfg, seed=1, b=4, l=32, speech_fraction=0.9))


def test_the_train_step_drops_with_its_key_and_evaluation_never_does():
  cfg = tiny()
  model = make(cfg)
  graphdef, _ = nnx.split(model)
  batch = _batch_with_tts_answers(cfg)
  state, tx = _state(model)
  sched = optax.constant_schedule(0.0)
  trainable = jax.tree.map(lambda _: True, state.params)

  def run(rate, micro=1, rng=None):
    opts = loss_lib.LossOptions(speech_history_dropout=rate)
    step = jax.jit(step_lib.make_train_step(graphdef, tx, sched, trainable, vocab=cfg.vocab,
                                            loss_options=opts, num_microbatches=micro))
    s = state if rng is None else state.replace(rng=rng)
    return float(step(s, batch)[1]["loss"])

  plain = run(0.0)
  dropped = run(0.5)
  assert dropped != pytest.approx(plain, abs=1e-6)
  assert run(0.5) == dropped                                  # the step's key decides
  assert run(0.5, rng=jax.random.PRNGKey(7)) != pytest.approx(dropped, abs=1e-6)
  assert run(0.5, micro=2) != pytest.approx(plain, abs=1e-6)  # microbatches drop too
  eval_step = jax.jit(step_lib.make_eval_step(
      graphdef, loss_options=loss_lib.LossOptions(speech_history_dropout=0.5)))
  plain_eval = jax.jit(step_lib.make_eval_step(graphdef, loss_options=loss_lib.LossOptions()))
  a, b = eval_step(state.params, batch), plain_eval(state.params, batch)
  for k in a:
    np.testing.assert_allclose(np.asarray(a[k]), np.asarray(b[k]), rtol=1e-6)


@pytest.mark.parametrize("rate", [-0.1, 1.0])
def test_a_rate_outside_0_1_is_a_config_error(rate):
  with pytest.raises(ConfigError, match="speech_history_dropout"):
    loss_lib.LossOptions(speech_history_dropout=rate)
