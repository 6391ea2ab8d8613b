"""Synthetic data for runs, tests and benchmarks without a corpus, one source per pipeline stage.

  synthetic_speechlike(seconds, rate)   audio float32[P]: gliding harmonics under a syllable
                                        envelope, plus noise (speech tokenizer tests, speed)
  synthetic_examples(vocab, num)        random but valid template outputs (docs/data_contract.md
                                        section 3): caches and pipeline tests, benchmarks
  SyntheticTask                         a train-loop data factory whose loss really falls (below)

SyntheticTask: copy / reverse / arithmetic patterns over text and speech ids, packed into rows
with segment_ids and positions. Each document is `[BOS] [tag] x_1 .. x_n [SEP] y_1 .. y_n [EOS]`
where x is drawn from a small alphabet of text or speech ids and y is x copied, x reversed, x
mapped across modalities (text -> speech, a toy "TTS"), or an arithmetic progression continued.
Only the y part (and the EOS) carries loss weight, so a model that learns the rules drives the
loss toward zero. For K > 1 speech channels, channel k of a frame is a fixed function of its
channel-0 code. Rows are a pure function of (seed, split, step, global row index), so any process
can make its own share of any step's global batch, and the iterator state is just the step.
"""
from __future__ import annotations

from typing import Iterator

import gin
import numpy as np

from slm_jax.data.batch import HostShard
from slm_jax.unified_vocab import BOS_ID, EOS_ID, UnifiedVocab


def synthetic_speechlike(seconds: float, sample_rate: int, seed: int = 0) -> np.ndarray:
  """Voiced-like test audio float32[P]: gliding harmonics under a syllable envelope, plus noise."""
  rng = np.random.default_rng(seed)
  t = np.arange(int(seconds * sample_rate)) / sample_rate
  f0 = 120 + 30 * np.sin(2 * np.pi * 0.7 * t)
  phase = 2 * np.pi * np.cumsum(f0) / sample_rate
  voiced = sum(np.sin(h * phase) / h for h in range(1, 12))
  env = 0.5 + 0.5 * np.sin(2 * np.pi * 4 * t) ** 2
  x = 0.1 * env * voiced + 0.01 * rng.standard_normal(t.shape)
  return x.astype(np.float32)


def synthetic_examples(vocab: UnifiedVocab, num: int, *, mean_len: int = 200, seed: int = 0,
                       max_len: int = 4096) -> Iterator[dict]:
  """Yields `num` random but valid template outputs in `vocab`.

  Each is BOS, a task tag, a text span and a speech span (or the reverse, like ASR / TTS), EOS;
  loss on the second span. Lengths follow a log-normal around `mean_len`, which matches the
  spread of real utterances (a few words to a long sentence) well enough for throughput numbers.
  """
  rng = np.random.default_rng(seed)
  k = vocab.num_channels
  tags = [vocab.special_id(t) for t in ("[ASR]", "[TTS]")]
  for _ in range(num):
    n = int(np.clip(rng.lognormal(np.log(mean_len), 0.5), 6, max_len))
    n_text = max(1, n // 5)
    n_speech = max(1, n - n_text - 3)
    text = rng.integers(0, vocab.text_size, n_text) + vocab.text_start
    speech = rng.integers(0, vocab.speech_codebook_sizes[0], n_speech) + vocab.speech_start
    asr = bool(rng.integers(2))
    first, second = (speech, text) if asr else (text, speech)
    tokens = np.concatenate([[BOS_ID, tags[0] if asr else tags[1]], first, second, [EOS_ID]])
    loss_mask = np.zeros(len(tokens), np.float32)
    loss_mask[2 + len(first):] = 1.0
    ex = {"tokens": tokens.astype(np.int32), "loss_mask": loss_mask}
    if k > 1:
      codes = np.zeros((len(tokens), k - 1), np.int32)
      is_speech = tokens >= vocab.speech_start
      sizes = np.asarray(vocab.extra_codebook_sizes)
      codes[is_speech] = rng.integers(0, sizes, (int(is_speech.sum()), k - 1))
      ex["speech_codes"] = codes
    yield ex


# -- the synthetic task ---------------------------------------------------------------------
PATTERNS = ("copy", "reverse", "text_to_speech", "arithmetic")
_SPLIT_SALT = {"train": 0, "eval": 1}


def _extra_channels(codes0: np.ndarray, vocab: UnifiedVocab) -> np.ndarray:
  """Channels 1..K-1 of speech frames: a fixed function of channel 0 -> int32[N, K-1]."""
  sizes = vocab.extra_codebook_sizes
  return np.stack([(codes0 * (k + 2) + k) % c for k, c in enumerate(sizes)], -1).astype(np.int32)


@gin.configurable
class SyntheticTask:
  """Deterministic synthetic batches (see the module docstring); implements DataIterator."""

  def __init__(self, *, split: str, batch_size: int, seq_len: int, vocab: UnifiedVocab,
               shard: HostShard, seed: int = 0, alphabet: int = 32, min_len: int = 3,
               max_len: int = 12, patterns=PATTERNS):
    if split not in _SPLIT_SALT:
      raise ValueError(f"split={split!r}; the synthetic task has {sorted(_SPLIT_SALT)}")
    unknown = set(patterns) - set(PATTERNS)
    if unknown:
      raise ValueError(f"unknown synthetic patterns {sorted(unknown)}; use {PATTERNS}")
    if 2 * max_len + 4 > seq_len + 1:
      raise ValueError(f"seq_len={seq_len} is too short for documents of up to {max_len} symbols; "
                       f"lower SyntheticTask.max_len to <= {(seq_len - 3) // 2}")
    self.split, self.batch_size, self.seq_len, self.vocab = split, batch_size, seq_len, vocab
    self.shard, self.seed, self.patterns = shard, seed, tuple(patterns)
    self.text_alphabet = min(alphabet, vocab.text_size)
    self.speech_alphabet = min(alphabet, vocab.speech_codebook_sizes[0])
    self.min_len, self.max_len = min_len, max_len
    self.tags = {p: vocab.special_id(t) for p, t in (
        ("copy", "[TEXT_LM]"), ("reverse", "[SPEECH_LM]"), ("text_to_speech", "[TTS]"),
        ("arithmetic", "[INTERLEAVE]"))}
    self.sep = vocab.special_id("[SEP]")
    self.step = 0

  # -- DataIterator ---------------------------------------------------------------------------
  def get_state(self) -> dict:
    return {"step": self.step, "split": self.split, "seed": self.seed}

  def set_state(self, state: dict) -> None:
    self.step = int(state["step"])

  def __iter__(self):
    return self

  def __next__(self) -> dict[str, np.ndarray]:
    rows = [self._row(self.shard.first_row + i) for i in range(self.shard.num_rows)]
    self.step += 1
    return {k: np.stack([r[k] for r in rows]) for k in rows[0]}

  # -- documents ------------------------------------------------------------------------------
  def _symbols(self, rng, n, speech: bool) -> np.ndarray:
    v = self.vocab
    if speech:
      return v.speech_start + rng.integers(0, self.speech_alphabet, n)
    return v.text_start + rng.integers(0, self.text_alphabet, n)

  def _document(self, rng) -> tuple[np.ndarray, np.ndarray]:
    """(ids, weights) of one document; weights are 1 on the predictable part."""
    v = self.vocab
    pattern = self.patterns[rng.integers(len(self.patterns))]
    n = int(rng.integers(self.min_len, self.max_len + 1))
    speech = bool(rng.integers(2))
    if pattern == "copy":
      x = self._symbols(rng, n, speech)
      y = x
    elif pattern == "reverse":
      x = self._symbols(rng, n, speech)
      y = x[::-1]
    elif pattern == "text_to_speech":
      x = self._symbols(rng, n, False)
      y = v.speech_start + (x - v.text_start) % self.speech_alphabet
    else:
      alphabet = self.speech_alphabet if speech else self.text_alphabet
      start = v.speech_start if speech else v.text_start
      a, d = rng.integers(0, alphabet), rng.integers(1, 4)
      seq = start + (a + d * np.arange(2 * n)) % alphabet
      x, y = seq[:n], seq[n:]
    ids = np.concatenate([[BOS_ID, self.tags[pattern]], x, [self.sep], y, [EOS_ID]])
    # weight on predicting y and EOS: the targets of positions [len(x)+2, end)
    w = np.zeros(len(ids), np.float32)
    w[len(x) + 3:] = 1.0
    return ids.astype(np.int32), w

  def _row(self, global_row: int) -> dict[str, np.ndarray]:
    """One packed row: documents are appended until the next one does not fit."""
    salt = _SPLIT_SALT[self.split]
    rng = np.random.default_rng([self.seed, salt, self.step, global_row])
    length = self.seq_len + 1                       # inputs and targets are shifted by one
    ids = np.zeros(length, np.int32)
    w = np.zeros(length, np.float32)
    seg = np.zeros(length, np.int32)
    pos = np.zeros(length, np.int32)
    at, doc = 0, 1
    while True:
      d_ids, d_w = self._document(rng)
      if at + len(d_ids) > length:
        break
      ids[at:at + len(d_ids)], w[at:at + len(d_ids)] = d_ids, d_w
      seg[at:at + len(d_ids)], pos[at:at + len(d_ids)] = doc, np.arange(len(d_ids))
      at, doc = at + len(d_ids), doc + 1
    same_doc = (seg[:-1] == seg[1:]) & (seg[1:] > 0)
    out = {
        "tokens": ids[:-1], "targets": ids[1:], "segment_ids": seg[:-1], "positions": pos[:-1],
        "loss_weights": (w[1:] * same_doc).astype(np.float32),
    }
    if self.vocab.num_channels > 1:
      speech = self.vocab.is_speech(ids)
      codes = np.where(speech[:, None], _extra_channels(self.vocab.unified_to_speech(ids), self.vocab), 0)
      out["speech_codes"], out["target_speech_codes"] = codes[:-1], codes[1:]
    return out
