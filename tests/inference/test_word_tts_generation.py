"""Word-interleaved TTS generation (inference/word_tts.py): the injection points on a scripted
model, the per-word cap, and cached steps equal to full recomputation on tiny random models."""
import os
import sys

import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "models"))
from zipper_testing import randomize, tiny_zipper  # noqa: E402
from slm_jax.data.templates import Utterance, WordTTS  # noqa: E402
from slm_jax.inference import word_tts  # noqa: E402
from slm_jax.inference.session import Session  # noqa: E402
from slm_jax.models.build import build  # noqa: E402
from slm_jax.models.config import ModelConfig  # noqa: E402
from slm_jax.unified_vocab import BOS_ID, EOS_ID, PAD_ID, UnifiedVocab  # noqa: E402

K_SIZES = (64, 5, 3)


class CharVocab:
  """A text vocabulary of `size` ids: one id per character (ord mod size)."""

  def __init__(self, size):
    self.size, self.name = size, f"chars{size}"

  def encode_words(self, words):
    pieces = [[ord(c) % self.size for c in w] for w in words]
    return (np.asarray([i for p in pieces for i in p], np.int32),
            np.asarray([len(p) for p in pieces], np.int32))


class ScriptedSteps:
  """A fake model: after each [SPEECH] it predicts `lengths[row][word]` speech frames (frame j of
  a word: speech id j, extra codes (j % 5, j % 3)), then [TEXT]; it records every fed token."""

  def __init__(self, vocab, lengths, batch_size):
    self.vocab, self.lengths, self.batch_size = vocab, lengths, batch_size
    self.fed = [[] for _ in range(batch_size)]
    self.positions = [[] for _ in range(batch_size)]
    self.word = np.full((batch_size,), -1)
    self.count = np.zeros((batch_size,), int)

  def _predict(self):
    tokens = np.zeros((self.batch_size,), np.int32)
    codes = np.zeros((self.batch_size, 2), np.int32)
    for r in range(len(self.lengths)):
      w, j = self.word[r], self.count[r]
      if 0 <= w < len(self.lengths[r]) and j < self.lengths[r][w]:
        tokens[r], codes[r] = self.vocab.speech_start + j, (j % 5, j % 3)
      else:
        tokens[r] = self.vocab.special_id("[TEXT]")
    return tokens, codes

  def _read(self, r, token):
    if token == self.vocab.special_id("[SPEECH]"):
      self.word[r] += 1
      self.count[r] = 0
    elif self.vocab.is_speech(token):
      self.count[r] += 1

  def prefill(self, prompts):
    for r, p in enumerate(prompts):
      self.fed[r] += p.tolist()
      for t in p:
        self._read(r, t)
    return self._predict()

  def step(self, token_B, codes_BK, position_B, active_B):
    for r in np.flatnonzero(active_B):
      self.fed[r].append(int(token_B[r]))
      self.positions[r].append(int(position_B[r]))
      self._read(r, token_B[r])
    return self._predict()


def _vocab():
  return UnifiedVocab(text_size=8, speech_codebook_sizes=K_SIZES)


def test_script_matches_the_template_layout():
  """The prefill and injected words are the WordTTS example's tokens, word by word."""
  v = _vocab()
  words = [np.array([1, 2], np.int32), np.array([3], np.int32), np.array([4, 5], np.int32)]
  prompt, later = word_tts.script(v, words)
  frames = np.zeros((3, 3), np.int32)
  utt = Utterance(np.concatenate(words), np.array([2, 1, 2], np.int32), frames,
                  np.array([[0, 1], [1, 2], [2, 3]], np.int32))
  ex = WordTTS()(utt, 0, v)["tokens"]
  speech = np.flatnonzero(v.is_speech(ex))
  assert prompt.tolist() == ex[:speech[0]].tolist()
  assert later[0].tolist() == ex[speech[0] + 1:speech[1]].tolist()
  assert later[1].tolist() == ex[speech[1] + 1:speech[2]].tolist()
  with pytest.raises(word_tts.WordTTSError, match="at least one word"):
    word_tts.script(v, [])


def test_words_are_injected_when_the_model_ends_each_one():
  v = _vocab()
  t, s = v.special_id("[TEXT]"), v.special_id("[SPEECH]")
  words = [[np.array([1], np.int32), np.array([2, 3], np.int32), np.array([4], np.int32)],
           [np.array([5, 6], np.int32)]]
  scripts = [word_tts.script(v, w) for w in words]
  steps = ScriptedSteps(v, [[2, 0, 3], [4]], batch_size=3)      # row 2: padding, never active
  frames = word_tts.inject_words(steps, v, scripts, max_positions_per_word=10,
                                 max_totals=[100, 100])
  sp = lambda j: v.speech_start + j  # noqa: E731
  assert steps.fed[0] == ([BOS_ID, v.special_id("[TTS]"), t, v.text_start + 1, s, sp(0), sp(1),
                           t, v.text_start + 2, v.text_start + 3, s,     # word 2: no frame
                           t, v.text_start + 4, s, sp(0), sp(1), sp(2)])
  assert steps.fed[1][-5:] == [s, sp(0), sp(1), sp(2), sp(3)]
  assert steps.fed[2] == []
  # one position per fed token, each row from the end of its own prompt
  assert steps.positions[0] == list(range(5, len(steps.fed[0])))
  assert [f.shape for f in frames] == [(5, 3), (4, 3)]
  np.testing.assert_array_equal(frames[0][:, 0], [0, 1, 0, 1, 2])
  np.testing.assert_array_equal(frames[0][:, 1:], [[0, 0], [1, 1], [0, 0], [1, 1], [2, 2]])


def test_the_caps_hold():
  v = _vocab()
  scripts = [word_tts.script(v, [np.array([1], np.int32), np.array([2], np.int32)])]
  steps = ScriptedSteps(v, [[50, 50]], batch_size=1)           # never ends a word by itself
  frames = word_tts.inject_words(steps, v, scripts, max_positions_per_word=3, max_totals=[100])
  assert frames[0].shape[0] == 6
  t = v.special_id("[TEXT]")
  assert steps.fed[0].index(t, 3) == 5 + 3                     # injected after 3 frames
  steps = ScriptedSteps(v, [[50, 50]], batch_size=1)
  frames = word_tts.inject_words(steps, v, scripts, max_positions_per_word=3, max_totals=[4])
  assert frames[0].shape[0] == 4


# -- the real cached steps against recomputation ----------------------------------------------------
@nnx.jit
def _full_logits(model, tokens, segment_ids, codes):
  positions = jnp.arange(tokens.shape[1], dtype=jnp.int32)[None]
  return model.logits(tokens, segment_ids, positions, codes)


def _decide(model, tokens, codes, length):
  """The reference's decision: full forward over the padded context, argmax at its end."""
  v = model.cfg.vocab
  n = tokens.size
  seg = jnp.asarray((np.arange(128) < n)[None].astype(np.int32))
  tok = np.zeros((1, 128), np.int32)
  tok[0, :n] = tokens
  cod = np.zeros((1, 128, codes.shape[1]), np.int32)
  cod[0, :n] = codes
  logits, ch = _full_logits(model, jnp.asarray(tok), seg, jnp.asarray(cod))
  row = np.asarray(logits[0, n - 1], np.float64)
  row[v.size:] = -np.inf
  row[[PAD_ID, BOS_ID]] = -np.inf
  token = int(np.argmax(row))
  c = np.argmax(np.asarray(ch[0, n - 1]), -1) if v.is_speech(token) else np.zeros(2, int)
  return token, c.astype(np.int32)


def _by_recomputation(model, prompt, later, cap, max_total):
  v = model.cfg.vocab
  tokens, codes = list(prompt), [np.zeros(2, np.int32)] * prompt.size
  later, queue, frames, count = list(later), [], [], 0
  pred, pc = _decide(model, np.asarray(tokens), np.asarray(codes), len(tokens))
  while True:
    if queue:
      tokens.append(queue.pop(0))
      codes.append(np.zeros(2, np.int32))
    elif len(frames) >= max_total:
      break
    elif v.is_speech(pred) and count < cap:
      frames.append([int(v.unified_to_speech(np.array([pred]))[0])] + pc.tolist())
      tokens.append(pred)
      codes.append(pc)
      count += 1
    elif later:
      queue = [int(x) for x in later.pop(0)]
      tokens.append(queue.pop(0))
      codes.append(np.zeros(2, np.int32))
      count = 0
    else:
      break
    pred, pc = _decide(model, np.asarray(tokens), np.asarray(codes), len(tokens))
  return np.asarray(frames, np.int32).reshape(-1, 3)


def _shared_model():
  vocab = UnifiedVocab(text_size=40, speech_codebook_sizes=K_SIZES)
  return build(ModelConfig(vocab=vocab, num_layers=2, embed_dim=32, num_heads=4, num_kv_heads=2,
                           head_dim=8, mlp_dim=64, init_std=0.3, attention_impl="xla"), seed=3)


@pytest.mark.parametrize("arch", ["shared", "zipper"])
def test_cached_steps_equal_recomputation(arch):
  model = (_shared_model() if arch == "shared" else
           randomize(build(tiny_zipper(speech_codebook_sizes=K_SIZES)), seed=2, gate=0.6))
  session = Session.from_model(model, text_vocab=CharVocab(40))
  texts = ["ab cd e", "fgh", "i jk lm no"]
  cap, total = 4, 9
  frames = word_tts.synthesize_words(session, texts, max_positions_per_word=cap, max_total=total,
                                     batch_size=2, progress=False)
  lengths = []
  for text, got in zip(texts, frames):
    prompt, later = word_tts.script(model.cfg.vocab, word_tts.word_ids(session, text))
    expected = _by_recomputation(model, prompt, later, cap, total)
    np.testing.assert_array_equal(got, expected)
    lengths.append(len(got))
  assert sum(lengths) > 0                          # the model does speak (not a trivial match)


def test_bad_settings_are_clear_errors():
  session = Session.from_model(_shared_model(), text_vocab=CharVocab(40))
  with pytest.raises(word_tts.WordTTSError, match="max_positions_per_word"):
    word_tts.synthesize_words(session, ["a"], max_positions_per_word=-1)
  with pytest.raises(word_tts.WordTTSError, match="at least one word"):
    word_tts.synthesize_words(session, ["  "], max_positions_per_word=2)
