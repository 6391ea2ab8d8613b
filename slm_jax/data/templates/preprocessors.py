"""seqio preprocessors that run a template over a tf.data dataset of tokenized utterances.

    apply_template(dataset, template=..., vocab=..., max_length=...)  # contract 2 -> contract 3

Each example gets its own random seed from seqio (`map_over_dataset(num_seeds=1)`), so with a
fixed `get_dataset(seed=...)` the output is deterministic. Examples a template cannot use (empty
transcript, no speech, no word timings, too long, nothing to train) are never dropped silently:
with `on_invalid="skip"` they are filtered and counted per (template, reason) in
`skip_counts()` (and logged), with `on_invalid="raise"` they stop the pipeline with the reason.
Out-of-range ids and malformed inputs always raise.
"""
from __future__ import annotations

import collections
import logging
import threading
from typing import Callable, Mapping, Optional

import gin
import numpy as np
import seqio
import tensorflow as tf

from slm_jax.data.templates.base import Template
from slm_jax.data.templates.utterance import SkipExample, Utterance
from slm_jax.unified_vocab import UnifiedVocab

log = logging.getLogger(__name__)

_SKIPS: collections.Counter = collections.Counter()
_SKIPS_LOCK = threading.Lock()


def skip_counts() -> dict[str, int]:
  """Examples skipped so far in this process, keyed "template/reason"."""
  with _SKIPS_LOCK:
    return dict(_SKIPS)


def reset_skip_counts() -> None:
  with _SKIPS_LOCK:
    _SKIPS.clear()


def _count_skip(template: str, e: SkipExample) -> None:
  key = f"{template}/{e.reason}"
  with _SKIPS_LOCK:
    _SKIPS[key] += 1
    n = _SKIPS[key]
  if n & (n - 1) == 0:  # 1, 2, 4, 8, ...: visible but not flooding
    log.warning("template %s skipped %d example(s) for %s (last: %s); see "
                "slm_jax.data.templates.skip_counts()", template, n, e.reason, e)


def template_example(template: Template, features: Mapping[str, np.ndarray], seed,
                     vocab: UnifiedVocab, max_length: Optional[int] = None,
                     on_invalid: str = "skip") -> Optional[dict[str, np.ndarray]]:
  """Numpy core of apply_template: one contract-2 dict -> contract-3 dict, or None (counted)."""
  if on_invalid not in ("skip", "raise"):
    raise ValueError(f"on_invalid must be 'skip' or 'raise', got {on_invalid!r}")
  try:
    utt = Utterance.from_features(features, vocab.num_channels)
    return template(utt, seed, vocab, max_length)
  except SkipExample as e:
    if on_invalid == "raise":
      raise ValueError(f"template {template.name} cannot use this example: {e} (set "
                       "apply_template.on_invalid='skip' to skip and count such examples)") from e
    _count_skip(template.name, e)
    return None


@gin.configurable(denylist=["dataset", "sequence_length"])
def apply_template(dataset: tf.data.Dataset, template: Template, vocab: UnifiedVocab,
                   encode_text: Optional[Callable[[str], np.ndarray]] = None,
                   max_length: Optional[int] = None, on_invalid: str = "skip",
                   sequence_length: Optional[Mapping[str, int]] = None) -> tf.data.Dataset:
  """seqio preprocessor: contract-2 features -> {tokens, loss_mask[, speech_codes]}.

  Args:
    dataset: examples with word_text_ids, word_text_lens and, for speech templates,
      speech_frames int32[T, K] and word_frame_spans int32[W, 2].
    template: a Template (TextLM(), ASR(), SpanInterleave(), ...).
    vocab: the UnifiedVocab the ids are laid out for.
    encode_text: text -> text ids, for templates with fixed texts (Instruct); usually
      `lambda s: text_vocab.encode_words(s.split())[0]`.
    max_length: truncation length when seqio passes no sequence_length["tokens"] (that wins).
    on_invalid: "skip" (filter and count) or "raise".
  """
  if sequence_length and sequence_length.get("tokens"):
    max_length = int(sequence_length["tokens"])
  if encode_text is not None:
    template = template.bind(encode_text)
  extra = vocab.num_channels - 1

  def _py(ids, lens, frames, spans, seed):
    feats = {"word_text_ids": ids, "word_text_lens": lens, "speech_frames": frames,
             "word_frame_spans": spans}
    out = template_example(template, feats, seed, vocab, max_length, on_invalid)
    if out is None:
      return (np.zeros([0], np.int32), np.zeros([0, extra], np.int32), np.zeros([0], np.float32),
              np.bool_(False))
    codes = out.get("speech_codes", np.zeros([out["tokens"].size, extra], np.int32))
    return out["tokens"], codes, out["loss_mask"], np.bool_(True)

  @seqio.map_over_dataset(num_seeds=1)
  def _map(ex, seed):
    frames = ex.get("speech_frames", tf.zeros([0, vocab.num_channels], tf.int32))
    spans = ex.get("word_frame_spans", tf.zeros([0, 2], tf.int32))
    lens = ex.get("word_text_lens", tf.size(ex["word_text_ids"])[None])
    tokens, codes, mask, ok = tf.numpy_function(
        _py, [tf.cast(ex["word_text_ids"], tf.int32), tf.cast(lens, tf.int32),
              tf.cast(frames, tf.int32), tf.cast(spans, tf.int32), seed],
        [tf.int32, tf.int32, tf.float32, tf.bool], stateful=False)
    tokens.set_shape([None])
    codes.set_shape([None, extra])
    mask.set_shape([None])
    ok.set_shape([])
    out = {"tokens": tokens, "loss_mask": mask, "_ok": ok}
    if extra:
      out["speech_codes"] = codes
    return out

  ds = _map(dataset).filter(lambda ex: ex["_ok"])
  return ds.map(lambda ex: {k: v for k, v in ex.items() if k != "_ok"},
                num_parallel_calls=tf.data.AUTOTUNE)
