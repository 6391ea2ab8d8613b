"""WordTTS (word-interleaved TTS): exact layout and loss mask on known word timings (also with dMel
`stack = 4`), truncation, skips, and the auxiliary CTC loss over its example."""
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from slm_jax.data.speech.dmel import DMelTokenizer
from slm_jax.data.speech.mel import MelConfig
from slm_jax.data.templates import TEMPLATES, SkipExample, Utterance, WordAlignedInterleave, WordTTS
from slm_jax.data.text.byte_vocab import ByteVocab
from slm_jax.data.tokenize import tokenize_numpy
from slm_jax.unified_vocab import BOS_ID, EOS_ID, UnifiedVocab

V1 = UnifiedVocab(text_size=100, speech_codebook_sizes=(10,))
V2 = UnifiedVocab(text_size=100, speech_codebook_sizes=(10, 4))
TS, SS = V1.text_start, V1.speech_start


def sid(name, v=V1):
  return v.special_id(name)


def utt3(k=1):
  """3 words: text ids [5,6] [7] [8,9]; 12 frames; words at frames [1,4) [4,6) [8,11).
  Boundary tiles: [0, 4) [4, 7) [7, 12) (cut in the middle of the pause 6..8)."""
  frames = np.stack([np.arange(12) % 10, np.arange(12) % 4], 1)[:, :k].astype(np.int32)
  return Utterance(np.array([5, 6, 7, 8, 9], np.int32), np.array([2, 1, 2], np.int32), frames,
                   np.array([[1, 4], [4, 6], [8, 11]], np.int32))


def speech(idx):
  return [SS + int(i) % 10 for i in idx]


def test_registered_as_tts_words():
  assert TEMPLATES["tts_words"] is WordTTS and WordTTS.needs_alignment


def test_exact_tokens_and_loss_mask():
  out = WordTTS()(utt3(), 0, V1)
  t, s = sid("[TEXT]"), sid("[SPEECH]")
  assert out["tokens"].tolist() == (
      [BOS_ID, sid("[TTS]"), t, TS + 5, TS + 6, s] + speech(range(0, 4)) +
      [t, TS + 7, s] + speech(range(4, 7)) +
      [t, TS + 8, TS + 9, s] + speech(range(7, 12)) + [EOS_ID])
  # trained: speech, the [TEXT] after a word's speech, EOS; not [TTS], the first [TEXT], word
  # text ids, [SPEECH] markers
  assert out["loss_mask"].tolist() == ([0, 0, 0, 0, 0, 0] + [1] * 4 + [1, 0, 0] + [1] * 3 +
                                       [1, 0, 0, 0] + [1] * 5 + [1])


def test_speech_tiles_are_word_aligned_interleaves():
  """The word tiles are exactly the cuts WordAlignedInterleave makes (one shared helper)."""
  u = utt3()
  starts, ends = WordAlignedInterleave().speech_bounds(u)
  np.testing.assert_array_equal(u.boundary_tiles(), list(starts) + [ends[-1]])
  np.testing.assert_array_equal(u.boundary_tiles(), [0, 4, 7, 12])


def test_extra_channels_follow_their_frames():
  u = utt3(k=2)
  out = WordTTS()(u, 0, V2)
  speech_pos = V2.is_speech(out["tokens"])
  np.testing.assert_array_equal(out["speech_codes"][speech_pos, 0], u.speech_frames[:, 1])
  assert (out["speech_codes"][~speech_pos] == 0).all()


def test_stacked_dmel_positions_follow_the_word_timings():
  """dMel at 50 Hz with stack = 4: timings map to 12.5 positions per second (the tokenizer's
  frame rate), so each word's tile is the positions of its time range, all K = 4 x 80 channels."""
  sr = 16000
  tok = DMelTokenizer(stack=4, mel=MelConfig(hop_length=320))    # configs/models/demo.gin
  assert tok.frame_rate == 12.5
  rng = np.random.default_rng(0)
  audio = (0.1 * rng.standard_normal(int(1.6 * sr))).astype(np.float32)
  words = ["ab", "c", "de"]
  starts, ends = [0.10, 0.50, 1.02], [0.42, 0.90, 1.50]
  vocab = UnifiedVocab(text_size=256, speech_codebook_sizes=tok.codebook_sizes)
  feats = tokenize_numpy(words, starts, ends, audio, sr, ByteVocab(), tok)
  frames = feats["speech_frames"]
  t = frames.shape[0]
  assert frames.shape[1] == 320 and t == tok.num_frames(audio.size)
  # positions: round(time x 12.5): [1, 5) [6, 11) [13, 19); cuts at (5+6+1)//2 = 6, (11+13+1)//2 = 12
  np.testing.assert_array_equal(feats["word_frame_spans"], [[1, 5], [6, 11], [13, 19]])
  u = Utterance.from_features(feats, 320)
  out = WordTTS()(u, 0, vocab)
  tokens, codes = out["tokens"], out["speech_codes"]
  text, sp = vocab.special_id("[TEXT]"), vocab.special_id("[SPEECH]")
  opens = np.flatnonzero(tokens == sp)
  closes = list(np.flatnonzero(tokens == text)[1:]) + [tokens.size - 1]
  for (lo, hi), o, c in zip([(0, 6), (6, 12), (12, t)], opens, closes):
    got = np.concatenate([vocab.unified_to_speech(tokens[o + 1:c])[:, None], codes[o + 1:c]], 1)
    np.testing.assert_array_equal(got, frames[lo:hi])
  assert vocab.is_speech(tokens).sum() == t


def test_truncation_keeps_whole_words():
  full = WordTTS()(utt3(), 0, V1)
  # Two words: their speech ends where word 1 ends (frame 6), so word 1's tile is [4, 6).
  out = WordTTS()(utt3(), 0, V1, max_length=16)
  assert out["tokens"].tolist() == full["tokens"][:10].tolist() + [
      sid("[TEXT]"), TS + 7, sid("[SPEECH]")] + speech([4, 5]) + [EOS_ID]
  assert out["loss_mask"][-1] == 1.0
  out = WordTTS()(utt3(), 0, V1, max_length=15)                   # one word
  assert out["tokens"].tolist() == full["tokens"][:10].tolist() + [EOS_ID]


def test_utterances_without_timings_are_skipped():
  u = utt3()
  unaligned = Utterance(u.word_text_ids, u.word_text_lens, u.speech_frames, np.zeros((0, 2), np.int32))
  with pytest.raises(SkipExample) as e:
    WordTTS()(unaligned, 0, V1)
  assert e.value.reason == "no_alignment"


def _tiny_ctc_model():
  from slm_jax.models.build import build  # pylint: disable=import-outside-toplevel
  from slm_jax.models.config import ModelConfig  # pylint: disable=import-outside-toplevel
  vocab = UnifiedVocab(text_size=40, speech_codebook_sizes=(24,))
  cfg = ModelConfig(vocab=vocab, num_layers=1, embed_dim=32, num_heads=4, num_kv_heads=2,
                    head_dim=8, mlp_dim=64, vocab_pad_multiple=128, init_std=0.2,
                    attention_impl="xla", asr_ctc=True)
  return build(cfg, seed=0)


def test_ctc_pairs_its_frames_in_order_with_its_words_in_order():
  from slm_jax.models import ctc  # pylint: disable=import-outside-toplevel
  model = _tiny_ctc_model()
  v = model.cfg.vocab
  u = utt3()
  ex = WordTTS()(u, 0, v)
  n = ex["tokens"].size
  batch = {"tokens": jnp.asarray(ex["tokens"][None]), "segment_ids": jnp.ones((1, n), jnp.int32)}
  hidden = jax.random.normal(jax.random.key(3), (1, n, model.cfg.embed_dim))
  sums = ctc.asr_ctc_sums(model, hidden, batch)
  frames = np.flatnonzero(v.is_speech(ex["tokens"]))
  assert frames.size == u.num_frames
  logits = model.heads.ctc_logits(hidden[:, frames])[:, :, 0]    # U = 1
  labels = jnp.asarray(u.word_text_ids[None] + 1)            # class = text id + 1 (0 = blank)
  expected = optax.ctc_loss(logits, jnp.zeros((1, frames.size)), labels, jnp.zeros(labels.shape))
  np.testing.assert_allclose(float(sums["ctc"]), float(expected[0]), rtol=1e-5)
  assert float(sums["ctc_labels"]) == u.word_text_ids.size
