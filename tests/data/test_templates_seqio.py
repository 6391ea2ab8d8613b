"""The seqio/tf.data side of templates: tokenization (contract 1 -> 2), apply_template, skips."""
import numpy as np
import pytest
import seqio
import tensorflow as tf

from slm_jax.data.templates import (ASR, SpanInterleave, TextLM, apply_template, reset_skip_counts,
                                    skip_counts)
from slm_jax.data.tokenize import tokenize_numpy, tokenize_utterance, word_frame_spans
from slm_jax.unified_vocab import UnifiedVocab

V = UnifiedVocab(text_size=256, speech_codebook_sizes=(8, 3))


class FakeByteVocab:
  """Bytes of each word, later words prefixed with a space (like a byte-level tokenizer)."""
  name, size = "fake-bytes", 256

  def encode_words(self, words):
    pieces = [list((w if i == 0 else " " + w).encode()) for i, w in enumerate(words)]
    return (np.array([b for p in pieces for b in p], np.int32),
            np.array([len(p) for p in pieces], np.int32))


class FakeSpeechTokenizer:
  """25 Hz frames at 16 kHz; channel 0 = loudness level (0..7), channel 1 = frame index % 3."""
  name, frame_rate, num_channels, codebook_sizes = "fake-speech", 25.0, 2, (8, 3)

  def __init__(self, dedup=False):
    self.dedup = dedup

  def encode(self, audio, sample_rate):
    assert sample_rate == 16000 and audio.dtype == np.float32
    t = int(np.ceil(audio.size / 640))
    padded = np.pad(audio, (0, t * 640 - audio.size)).reshape(t, 640)
    level = np.minimum((np.abs(padded).mean(1) * 20).astype(np.int32), 7)
    return np.stack([level, np.arange(t) % 3], 1).astype(np.int32)


def _utterances():
  sr = 16000
  audio = np.zeros(sr, np.int16)
  audio[4000:8000] = 8000   # word 0: 0.25 - 0.5 s
  audio[10000:14000] = 16000  # word 1: 0.625 - 0.875 s
  return {"id": ["a", "b"], "text": ["loud louder", ""],
          "words": tf.ragged.constant([["loud", "louder"], []]),
          "word_starts": tf.ragged.constant([[0.25, 0.625], []], tf.float32),
          "word_ends": tf.ragged.constant([[0.5, 0.875], []], tf.float32),
          "audio": np.stack([audio, audio])}


def _ds():
  return tf.data.Dataset.from_tensor_slices(_utterances())


def test_word_frame_spans_rounding_and_clipping():
  spans = word_frame_spans([0.25, 0.62, 0.9], [0.5, 0.88, 2.0], 25.0, 30)
  assert spans.tolist() == [[6, 12], [16, 22], [22, 30]]
  assert word_frame_spans([0.1], [0.1], 25.0, 10).tolist() == [[2, 3]]  # at least one frame
  with pytest.raises(ValueError, match="ordered"):
    word_frame_spans([0.5, 0.1], [0.6, 0.2], 25.0, 30)


def test_tokenize_numpy_and_dedup_refusal():
  ex = {k: (v[0] if not isinstance(v, tf.RaggedTensor) else v[0].numpy()) for k, v in _utterances().items()}
  out = tokenize_numpy(ex["words"], ex["word_starts"], ex["word_ends"], ex["audio"], 16000,
                       FakeByteVocab(), FakeSpeechTokenizer())
  assert bytes(out["word_text_ids"].astype(np.uint8)).decode() == "loud louder"
  assert out["word_text_lens"].tolist() == [4, 7]
  assert out["speech_frames"].shape == (25, 2)
  assert out["word_frame_spans"].tolist() == [[6, 12], [16, 22]]
  loud = out["speech_frames"][:, 0]
  assert loud[6:12].min() > 0 and loud[16:22].min() > loud[6:12].max() and loud[:6].max() == 0
  with pytest.raises(ValueError, match="dedup"):
    tokenize_numpy(ex["words"], ex["word_starts"], ex["word_ends"], ex["audio"], 16000,
                   FakeByteVocab(), FakeSpeechTokenizer(dedup=True))
  out = tokenize_numpy(ex["words"], ex["word_starts"], ex["word_ends"], ex["audio"], 16000,
                       FakeByteVocab(), FakeSpeechTokenizer(dedup=True), allow_dedup=True)
  assert out["word_frame_spans"].shape == (0, 2)


def _pipeline(template, **kw):
  ds = tokenize_utterance(_ds(), text_vocab=FakeByteVocab(), speech_tokenizer=FakeSpeechTokenizer())
  with seqio.utils.map_seed_manager(3):
    ds = apply_template(ds, template=template, vocab=V, **kw)
  return list(ds.as_numpy_iterator())


def test_apply_template_in_tf_data_matches_numpy_and_counts_skips():
  reset_skip_counts()
  exs = _pipeline(ASR())
  assert len(exs) == 1  # the empty transcript is filtered ...
  assert skip_counts() == {"asr/empty_transcript": 1}  # ... and counted
  ex = exs[0]
  assert set(ex) == {"tokens", "loss_mask", "speech_codes"}
  answer = V.unified_to_text(ex["tokens"][ex["loss_mask"] > 0][:-1])
  assert bytes(answer.astype(np.uint8)).decode() == "loud louder"
  speech = V.is_speech(ex["tokens"])
  assert speech.sum() == 25 and ex["speech_codes"][speech, 0].tolist() == (np.arange(25) % 3).tolist()


def test_apply_template_raise_policy_names_the_problem():
  with pytest.raises(tf.errors.OpError, match="empty_transcript"):
    _pipeline(TextLM(), on_invalid="raise")


def test_apply_template_deterministic_and_uses_sequence_length():
  a = _pipeline(SpanInterleave(mean_span_words=1.0))
  b = _pipeline(SpanInterleave(mean_span_words=1.0))
  assert [e["tokens"].tolist() for e in a] == [e["tokens"].tolist() for e in b]
  short = _pipeline(ASR(), sequence_length={"tokens": 25})
  assert len(short[0]["tokens"]) <= 25
  answer = V.unified_to_text(short[0]["tokens"][short[0]["loss_mask"] > 0][:-1])
  assert bytes(answer.astype(np.uint8)).decode() == "loud"  # first word only, aligned with speech
