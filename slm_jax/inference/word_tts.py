"""Word-interleaved TTS generation: the words are injected one by one as the model ends each.

    frames = synthesize_words(session, ["the cat sat"], max_positions_per_word=19)  # [T, K] each

The context is laid out like the WordTTS template (slm_jax/data/templates/word_tts.py):

    [BOS] [TTS] [TEXT] w1 [SPEECH] s s s [TEXT] w2 [SPEECH] s s ... (stop)

For each text: its words (normalized like the corpus, tokenized one word at a time as the
tokenizer makes `word_text_ids`), a prefill of `[BOS] [TTS] [TEXT] w1 [SPEECH]`, then greedy
steps. At each step a row either feeds the next token of its forced queue, or reads the model's
most likely next unified id: a speech id (while the word has used fewer than
`max_positions_per_word` positions) is a frame, emitted with its K-1 extra channels (argmax, as
the greedy engine) and fed back; anything else ([TEXT], EOS, ...) or the cap ends the word, and
the queue is filled with `[TEXT] <next word ids> [SPEECH]` (fed one per step, the model's
predictions in between ignored). After the last word's speech ends, or `max_total` frames, the
row stops. Rows are batched with a KV cache (`model.forward_cached`, one jit-compiled step for
every row, each at its own position); the shared model and the Zipper (its own cache) both work.
"""
from __future__ import annotations

import functools
import sys
from typing import Optional, Sequence, Union

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from slm_jax.data.templates.sequence import SequenceBuilder
from slm_jax.errors import SlmError
from slm_jax.inference.joint_decoding import at_positions
from slm_jax.models.build import init_cache
from slm_jax.unified_vocab import BOS_ID, PAD_ID, UnifiedVocab


class WordTTSError(SlmError, ValueError):
  """A word-injection request without words, or settings out of range."""


# -- scripts: the forced tokens of one text --------------------------------------------------------
def word_ids(session, text: str) -> list[np.ndarray]:
  """Text ids (text vocabulary) of each word of `text`, normalized like the corpus transcripts
  and encoded one word at a time (`encode_words`, as tokenize.py makes `word_text_ids`)."""
  from slm_jax.data.transcript import normalize_transcript  # pylint: disable=import-outside-toplevel
  from slm_jax.inference.session import TokenizerUnavailableError  # pylint: disable=import-outside-toplevel
  if session.text_vocab is None:
    raise TokenizerUnavailableError(f"{session.directory} ships no text tokenizer; export it "
                                    "again with `slm-export --text_tokenizer PATH`")
  words = normalize_transcript(text).split()
  ids, lens = session.text_vocab.encode_words(words)
  return np.split(np.asarray(ids, np.int32), np.cumsum(lens)[:-1]) if len(words) else []


def script(vocab: UnifiedVocab, words: Sequence[np.ndarray]) -> tuple[np.ndarray, list[np.ndarray]]:
  """(prefill ids `[BOS] [TTS] [TEXT] w1 [SPEECH]`, per later word `[TEXT] w [SPEECH]`), unified
  ids laid out by the template's SequenceBuilder (the same ids training saw)."""
  if not len(words):
    raise WordTTSError("word-interleaved TTS needs a text with at least one word")
  def ids(seq: SequenceBuilder) -> np.ndarray:
    return seq.finish(train_eos=True)["tokens"][:-1]       # minus the EOS finish() appends
  first = SequenceBuilder(vocab).special("[TTS]").special("[TEXT]").text(words[0], False)
  prompt = ids(first.special("[SPEECH]"))
  text, speech = vocab.special_id("[TEXT]"), vocab.special_id("[SPEECH]")
  later = [np.concatenate([[text], vocab.text_to_unified(np.asarray(w, np.int32)), [speech]])
           .astype(np.int32) for w in words[1:]]
  return prompt.astype(np.int32), later


# -- the cached model steps ---------------------------------------------------------------------
@functools.lru_cache(maxsize=8)
def _compiled(graphdef):
  """(prefill, step), jit-compiled once per model structure (shapes from the arguments)."""

  def decide(model, h_BD):
    """The most likely next unified id (any real id) and, for speech, its extra channels."""
    vocab = model.cfg.vocab
    logits_BV = model.heads.logits(h_BD)
    v_V = jnp.arange(logits_BV.shape[-1])
    real_V = (v_V < vocab.size) & (v_V != PAD_ID) & (v_V != BOS_ID)
    token_B = jnp.argmax(jnp.where(real_V, logits_BV, -1e30), axis=-1).astype(jnp.int32)
    if vocab.num_channels > 1:
      codes_BK = model.heads.choose_channels(h_BD, token_B - vocab.speech_start,
                                             lambda logits, _: jnp.argmax(logits, -1))
      codes_BK = jnp.where(vocab.is_speech(token_B)[:, None], codes_BK, 0)
    else:
      codes_BK = jnp.zeros(token_B.shape + (0,), jnp.int32)
    return token_B, codes_BK

  @jax.jit
  def prefill(params, cache, tokens_BL, codes_BLK, length_B):
    model = nnx.merge(graphdef, params)
    index_1L = jnp.arange(tokens_BL.shape[1])[None]
    segment_BL = (index_1L < length_B[:, None]).astype(jnp.int32)
    positions_BL = jnp.broadcast_to(index_1L, tokens_BL.shape).astype(jnp.int32)
    h_BLD, cache = model.forward_cached(tokens_BL, segment_BL, positions_BL, codes_BLK, cache,
                                        empty=True)
    h_BD = at_positions(h_BLD, (length_B - 1)[:, None])[:, 0]
    return decide(model, h_BD) + (cache,)

  @jax.jit
  def step(params, cache, token_B, codes_BK, position_B, active_B):
    model = nnx.merge(graphdef, params)
    codes = codes_BK[:, None] if model.cfg.vocab.num_channels > 1 else None
    h_B1D, cache = model.forward_cached(token_B[:, None], active_B.astype(jnp.int32)[:, None],
                                        position_B[:, None], codes, cache)
    return decide(model, h_B1D[:, 0]) + (cache,)

  return prefill, step


class CachedSteps:
  """The model's greedy decisions for a batch of rows through one KV cache.

  prefill(prompts) -> (next ids int32[B], their codes int32[B, K-1]); step(ids, codes,
  positions, active) -> the same after feeding one token per row (inactive rows feed nothing).
  """

  def __init__(self, model, batch_size: int, max_length: int):
    self.cfg = model.cfg
    self.graphdef, self.params = nnx.split(model)
    self.batch_size, self.max_length = batch_size, max_length
    self._prefill, self._step = _compiled(self.graphdef)
    self.cache = None

  def prefill(self, prompts: Sequence[np.ndarray], bucket: int = 16):
    b, k_extra = self.batch_size, self.cfg.vocab.num_channels - 1
    length = -(-max(p.size for p in prompts) // bucket) * bucket
    tokens = np.zeros((b, length), np.int32)
    lengths = np.ones((b,), np.int32)
    for i, p in enumerate(prompts):
      tokens[i, :p.size], lengths[i] = p, p.size
    codes = jnp.zeros((b, length, k_extra), jnp.int32) if k_extra else None
    cache = init_cache(self.cfg, b, self.max_length)
    token, codes_out, self.cache = self._prefill(self.params, cache, jnp.asarray(tokens), codes,
                                                 jnp.asarray(lengths))
    return np.asarray(token), np.asarray(codes_out)

  def step(self, token_B, codes_BK, position_B, active_B):
    position_B = np.minimum(position_B, self.max_length - 1).astype(np.int32)
    token, codes, self.cache = self._step(self.params, self.cache, jnp.asarray(token_B, jnp.int32),
                                          jnp.asarray(codes_BK, jnp.int32), jnp.asarray(position_B),
                                          jnp.asarray(active_B))
    return np.asarray(token), np.asarray(codes)


# -- the injection loop ---------------------------------------------------------------------------
def inject_words(steps, vocab: UnifiedVocab, scripts: Sequence[tuple[np.ndarray, list[np.ndarray]]],
                 max_positions_per_word: int, max_totals: Sequence[int]) -> list[np.ndarray]:
  """Frames int32[T, K] of each row of `scripts` (see the module docstring); `steps` is a
  CachedSteps (or anything with its prefill / step) of at least len(scripts) rows."""
  b, k_extra = steps.batch_size, vocab.num_channels - 1
  n = len(scripts)
  pred, pred_codes = steps.prefill([s[0] for s in scripts])
  position = np.zeros((b,), np.int64)
  position[:n] = [s[0].size for s in scripts]
  later = [list(s[1]) for s in scripts]
  queue: list[list[int]] = [[] for _ in range(n)]
  count, total = np.zeros((n,), np.int64), np.zeros((n,), np.int64)
  frames: list[list[np.ndarray]] = [[] for _ in range(n)]
  active = np.zeros((b,), bool)
  active[:n] = True
  while active.any():
    token, codes = np.zeros((b,), np.int32), np.zeros((b, k_extra), np.int32)
    for r in np.flatnonzero(active):
      if queue[r]:                                        # a forced token of the next word
        token[r] = queue[r].pop(0)
      elif total[r] >= max_totals[r]:
        active[r] = False
      elif vocab.is_speech(pred[r]) and count[r] < max_positions_per_word:
        token[r], codes[r] = pred[r], pred_codes[r]       # a frame of this word: emit, feed back
        frames[r].append(np.concatenate([vocab.unified_to_speech(pred[r:r + 1]), pred_codes[r]]))
        count[r] += 1
        total[r] += 1
      elif later[r]:                                      # the word ended: inject the next one
        queue[r] = [int(t) for t in later[r].pop(0)]
        token[r] = queue[r].pop(0)
        count[r] = 0
      else:                                               # the last word ended
        active[r] = False
    if not active.any():
      break
    pred, pred_codes = steps.step(token, codes, position, active)
    position += active
  return [np.asarray(f, np.int32).reshape(len(f), k_extra + 1) for f in frames]


def cache_length(scripts, max_totals: Sequence[int], multiple: int = 64) -> int:
  """Cache slots for the longest row: prompt, every injected word and its frames (+1)."""
  longest = max(s[0].size + sum(w.size for w in s[1]) + int(m) for s, m in zip(scripts, max_totals))
  return -(-(longest + 1) // multiple) * multiple


def default_positions_per_word(session, seconds: float = 1.5) -> int:
  """`seconds` of speech positions (the tokenizer's frame rate; 25 without a tokenizer)."""
  tok = session.speech_tokenizer
  return int(np.ceil(tok.frame_rate * seconds)) if tok is not None else 25


def synthesize_words(session, texts: Sequence[str], *,
                     max_positions_per_word: Optional[int] = None,
                     max_total: Union[None, int, Sequence[int]] = None, batch_size: int = 8,
                     progress: bool = True) -> list[np.ndarray]:
  """Greedy word-interleaved TTS: speech frames int32[T, K] for each text (T may be 0).

  max_positions_per_word: a word's speech ends after this many positions at most (None: 1.5 s
  of positions). max_total: the most frames per text, an int or one per text (None: the words
  times max_positions_per_word). Texts are decoded `batch_size` at a time (a fixed batch shape,
  so the step compiles once per cache length).
  """
  cap = int(max_positions_per_word or default_positions_per_word(session))
  if cap < 1:
    raise WordTTSError(f"max_positions_per_word must be >= 1, got {max_positions_per_word}")
  if batch_size < 1:
    raise WordTTSError(f"batch_size must be >= 1, got {batch_size}")
  vocab = session.vocab
  words = [word_ids(session, t) for t in texts]
  scripts = [script(vocab, w) for w in words]
  if max_total is None:
    totals = [cap * len(w) for w in words]
  elif np.isscalar(max_total):
    totals = [int(max_total)] * len(texts)
  else:
    totals = [int(m) for m in max_total]
  if len(totals) != len(texts) or min(totals, default=1) < 0:
    raise WordTTSError(f"max_total must be >= 0, one per text ({len(texts)}), got {max_total}")
  from tqdm import tqdm  # pylint: disable=import-outside-toplevel
  out: list[np.ndarray] = []
  rows = max(1, min(batch_size, len(texts)))
  length = cache_length(scripts, totals) if texts else 0     # one for all chunks: one compile
  with tqdm(total=len(texts), desc="tts (words)", unit="utt", file=sys.stderr, leave=False,
            disable=(not progress) or None) as bar:
    for start in range(0, len(texts), rows):
      chunk, chunk_totals = scripts[start:start + rows], totals[start:start + rows]
      steps = CachedSteps(session.model, rows, length)
      out += inject_words(steps, vocab, chunk, cap, chunk_totals)
      bar.update(len(chunk))
  return out
