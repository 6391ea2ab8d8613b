"""Bidirectional attention over the speech of tagged (ASR) segments: models/attention_order.py."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from slm_jax.configuration import ConfigError
from slm_jax.models.attention_order import attention_order
from slm_jax.models.kv_cache import init_cache
from tests.models.model_testing import make, tiny

TAGS = ("[ASR]",)


def _row(cfg):
  """Two packed documents: an ASR example (speech at 3..6) then a TTS one (speech at 14..16)."""
  v = cfg.vocab
  sp = lambda c: v.speech_start + c   # noqa: E731
  tx = lambda t: v.text_start + t     # noqa: E731
  s = v.special_id
  asr = [s("<bos>"), s("[ASR]"), s("[SPEECH]"), sp(1), sp(2), sp(3), sp(4), s("[TEXT]"), tx(5),
         tx(6), s("<eos>")]
  tts = [s("<bos>"), s("[TTS]"), s("[TEXT]"), tx(7), s("[SPEECH]"), sp(5), sp(6), sp(7)]
  tokens = np.array([asr + tts], np.int32)
  seg = np.array([[1] * len(asr) + [2] * len(tts)], np.int32)
  pos = np.array([list(range(len(asr))) + list(range(len(tts)))], np.int32)
  return jnp.asarray(tokens), jnp.asarray(seg), jnp.asarray(pos)


def test_order_gives_tagged_speech_runs_their_last_position():
  cfg = tiny(bidirectional_speech_tags=TAGS)
  tokens, seg, pos = _row(cfg)
  order = np.asarray(attention_order(tokens, seg, pos, cfg.vocab, TAGS))[0]
  expected = np.asarray(pos)[0].copy()
  expected[3:7] = 6                      # the ASR prompt's four frames share the last one's order
  np.testing.assert_array_equal(order, expected)   # TTS speech (untagged) stays causal
  assert attention_order(tokens, seg, pos, cfg.vocab, ()) is pos


def test_order_ignores_a_tag_of_the_previous_segment():
  cfg = tiny(bidirectional_speech_tags=TAGS)
  v = cfg.vocab
  tokens = jnp.asarray([[v.special_id("[ASR]"), v.speech_start, v.speech_start + 1,
                         v.speech_start + 2]], jnp.int32)
  seg = jnp.asarray([[1, 1, 2, 2]], jnp.int32)
  pos = jnp.asarray([[0, 1, 0, 1]], jnp.int32)
  order = np.asarray(attention_order(tokens, seg, pos, v, TAGS))[0]
  np.testing.assert_array_equal(order, [0, 1, 0, 1])   # segment 2 holds no tag: causal


def _hidden(model, tokens, seg, pos):
  return np.asarray(model(tokens, seg, pos))


def test_prompt_frames_see_later_frames_and_nothing_else_changes():
  cfg = tiny(bidirectional_speech_tags=TAGS)
  model = make(cfg)
  causal = make(tiny())
  tokens, seg, pos = _row(cfg)
  base = _hidden(model, tokens, seg, pos)
  changed = tokens.at[0, 6].set(cfg.vocab.speech_start + 9)    # the prompt's last frame
  after = _hidden(model, changed, seg, pos)
  diff = np.abs(after - base).max(-1)[0]
  assert (diff[3:6] > 1e-6).all(), "earlier prompt frames must see the later frame"
  assert (diff[:3] == 0).all(), "positions before the prompt must not"
  assert (diff[11:] == 0).all(), "the next document must not"
  # The causal model (no tags) keeps every earlier position unchanged.
  c_diff = np.abs(_hidden(causal, changed, seg, pos) - _hidden(causal, tokens, seg, pos)).max(-1)[0]
  assert (c_diff[:6] == 0).all()
  # A TTS frame stays causal under the tags: changing its last frame changes nothing before it.
  tts_changed = tokens.at[0, 18].set(cfg.vocab.speech_start + 9)
  t_diff = np.abs(_hidden(model, tts_changed, seg, pos) - base).max(-1)[0]
  assert (t_diff[:18] == 0).all()


@pytest.mark.parametrize("impl", ["xla_blockwise", "pallas"])
def test_implementations_agree_with_the_reference(impl):
  ref = make(tiny(bidirectional_speech_tags=TAGS))
  other = make(tiny(bidirectional_speech_tags=TAGS, attention_impl=impl))
  tokens, seg, pos = _row(ref.cfg)
  np.testing.assert_allclose(_hidden(other, tokens, seg, pos), _hidden(ref, tokens, seg, pos),
                             atol=2e-5, rtol=2e-5)


def test_cached_prefill_and_decode_equal_the_full_forward():
  cfg = tiny(bidirectional_speech_tags=TAGS)
  model = make(cfg)
  tokens, seg, pos = _row(cfg)
  tokens, seg, pos = tokens[:, :11], seg[:, :11], pos[:, :11]   # the ASR document alone
  full = _hidden(model, tokens, seg, pos)
  cache = init_cache(cfg, batch_size=1, max_length=16)
  prompt = 8                              # [BOS] [ASR] [SPEECH] 4 frames [TEXT], prefilled whole
  h, cache = model.forward_cached(tokens[:, :prompt], seg[:, :prompt], pos[:, :prompt], None,
                                  cache, empty=True)
  outs = [np.asarray(h)]
  for i in range(prompt, 11):
    h, cache = model.forward_cached(tokens[:, i:i + 1], seg[:, i:i + 1], pos[:, i:i + 1], None,
                                    cache)
    outs.append(np.asarray(h))
  np.testing.assert_allclose(np.concatenate(outs, 1), full, atol=2e-5, rtol=2e-5)


def test_bad_tags_are_config_errors():
  with pytest.raises(ConfigError, match="unknown special"):
    tiny(bidirectional_speech_tags=("[ASRX]",))
