"""Tokenizing: corpus utterances (contract section 1) -> tokenized utterances (section 2).

The text vocabulary (slm_jax/data/text) and the speech tokenizer (slm_jax/data/speech) of a task
meet here, in one example (`tokenize_numpy`) or as a seqio preprocessor over tf.data
(`tokenize_utterance`):

    word_text_ids    int32[N]     text_vocab.encode_words(words)
    word_text_lens   int32[W]
    speech_frames    int32[T, K]  speech_tokenizer.encode(audio float32, sample_rate)
    word_frame_spans int32[W, 2]  round(word_starts / word_ends * frame_rate), clipped to [0, T]

Utterances without word timings (e.g. real recordings with transcripts only) get
word_frame_spans int32[0, 2]: templates that need alignment skip them (counted), the others
use the whole recording.

Frame deduplication (collapsing repeated k-means units) changes the frame count non-uniformly
and breaks the word <-> frame alignment, so a tokenizer with `dedup=True` is refused here
unless `allow_dedup=True`, in which case word_frame_spans are left empty (no alignment).
"""
from __future__ import annotations

import gin
import numpy as np


def word_frame_spans(word_starts: np.ndarray, word_ends: np.ndarray, frame_rate: float,
                     num_frames: int) -> np.ndarray:
  """[start, end) frame of each word: rounded times, at least one frame each, clipped to T."""
  starts = np.asarray(word_starts, np.float64).reshape(-1)
  ends = np.asarray(word_ends, np.float64).reshape(-1)
  if starts.shape != ends.shape:
    raise ValueError(f"word_starts ({starts.size}) and word_ends ({ends.size}) differ in length")
  if starts.size and ((ends < starts).any() or (np.diff(starts) < 0).any() or (starts < 0).any()):
    raise ValueError(f"word timings must be non-negative, ordered, and end >= start; got starts "
                     f"{starts[:8].tolist()} ends {ends[:8].tolist()}")
  s = np.clip(np.round(starts * frame_rate), 0, num_frames).astype(np.int32)
  e = np.clip(np.maximum(np.round(ends * frame_rate), s + 1), 0, num_frames).astype(np.int32)
  return np.stack([np.minimum(s, e), e], axis=1).reshape(-1, 2)


def tokenize_numpy(words, word_starts, word_ends, audio, sample_rate, text_vocab,
                   speech_tokenizer=None, text: str = "", allow_dedup: bool = False) -> dict:
  """Numpy core of tokenize_utterance (one example)."""
  words = [w.decode("utf-8") if isinstance(w, bytes) else str(w) for w in np.asarray(words).ravel()]
  if not words and text:
    words = text.split()
  ids, lens = text_vocab.encode_words(words)
  out = {"word_text_ids": np.asarray(ids, np.int32), "word_text_lens": np.asarray(lens, np.int32)}
  if speech_tokenizer is None:
    return out
  dedup = bool(getattr(speech_tokenizer, "dedup", False))
  if dedup and not allow_dedup:
    raise ValueError(f"speech tokenizer {getattr(speech_tokenizer, 'name', speech_tokenizer)!r} "
                     "deduplicates frames, which breaks word <-> frame alignment (interleaving, "
                     "ASR/TTS truncation); configure it with dedup=False, or set "
                     "tokenize_utterance.allow_dedup=True to drop word timings instead")
  audio = np.asarray(audio)
  if np.issubdtype(audio.dtype, np.integer):
    audio = audio.astype(np.float32) / 32768.0
  frames = np.asarray(speech_tokenizer.encode(audio.astype(np.float32).reshape(-1),
                                              int(sample_rate)), np.int32)
  if frames.ndim != 2:
    raise ValueError(f"speech tokenizer must return int32[T, K], got shape {frames.shape}")
  out["speech_frames"] = frames
  starts = np.asarray(word_starts, np.float64).reshape(-1)
  if dedup or starts.size == 0 or starts.size != len(words):
    out["word_frame_spans"] = np.zeros([0, 2], np.int32)
  else:
    out["word_frame_spans"] = word_frame_spans(starts, word_ends, speech_tokenizer.frame_rate,
                                               frames.shape[0])
  return out


@gin.configurable(denylist=["dataset"])
def tokenize_utterance(dataset, text_vocab, speech_tokenizer=None,
                       default_sample_rate: int = 16000, allow_dedup: bool = False,
                       keep_features: tuple[str, ...] = ()):
  """Maps contract-1 utterances (text/words/word_starts/word_ends/audio[/sample_rate]) to
  contract-2 features. Without a speech tokenizer only the text features are produced.

  Args:
    text_vocab: a slm_jax.data.text vocabulary (needs `encode_words`).
    speech_tokenizer: a slm_jax.data.speech tokenizer (`encode(audio, rate) -> int32[T, K]`,
      `frame_rate`, `num_channels`), or None for text-only data.
    default_sample_rate: used when examples carry no `sample_rate` feature (tfds audio).
    allow_dedup: see the module docstring.
    keep_features: input features to pass through unchanged (e.g. ("id",)).
  Returns the mapped tf.data.Dataset.
  """
  import tensorflow as tf  # pylint: disable=import-outside-toplevel
  k = int(getattr(speech_tokenizer, "num_channels", 1)) if speech_tokenizer is not None else 0

  def _py(words, starts, ends, audio, rate, text):
    out = tokenize_numpy(words, starts, ends, audio, rate, text_vocab, speech_tokenizer,
                         text.decode("utf-8"), allow_dedup)
    res = [out["word_text_ids"], out["word_text_lens"]]
    if speech_tokenizer is not None:
      res += [out["speech_frames"], out["word_frame_spans"]]
    return res

  def _map(ex):
    text = ex.get("text", tf.constant(""))
    words = ex.get("words", tf.strings.split(text))
    starts = tf.cast(ex.get("word_starts", tf.zeros([0], tf.float32)), tf.float32)
    ends = tf.cast(ex.get("word_ends", tf.zeros([0], tf.float32)), tf.float32)
    audio = ex.get("audio", tf.zeros([0], tf.float32))
    if audio.dtype not in (tf.int16, tf.float32):
      audio = tf.cast(audio, tf.float32)
    rate = tf.cast(ex.get("sample_rate", default_sample_rate), tf.int64)
    dtypes = [tf.int32, tf.int32] + ([tf.int32, tf.int32] if speech_tokenizer is not None else [])
    res = tf.numpy_function(_py, [words, starts, ends, audio, rate, text], dtypes, stateful=False)
    out = {"word_text_ids": tf.ensure_shape(res[0], [None]),
           "word_text_lens": tf.ensure_shape(res[1], [None])}
    if speech_tokenizer is not None:
      out["speech_frames"] = tf.ensure_shape(res[2], [None, k])
      out["word_frame_spans"] = tf.ensure_shape(res[3], [None, 2])
    for name in keep_features:
      out[name] = ex[name]
    return out

  return dataset.map(_map, num_parallel_calls=tf.data.AUTOTUNE)
