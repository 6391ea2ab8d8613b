"""Templates: tokenized utterances -> training sequences in the unified vocabulary.

docs/data_contract.md sections 2 -> 3. Each template is a gin-configurable dataclass:

    TextLM, SpeechLM, ASR, TTS                  (basic.py)
    SpanInterleave, WordAlignedInterleave       (interleave.py)
    Instruct                                    (instruct.py)

    out = ASR()(Utterance(...), seed, unified_vocab, max_length)   # numpy, one example
    ds = apply_template(ds, template=ASR(), vocab=unified_vocab)    # seqio preprocessor
    ds = tokenize_utterance(ds, text_vocab, speech_tokenizer)      # contract 1 -> 2

The numpy core needs no TensorFlow; the seqio preprocessors are imported lazily.
"""
from slm_jax.data.templates.base import Template
from slm_jax.data.templates.basic import ASR, TTS, SpeechLM, TextLM
from slm_jax.data.templates.instruct import Instruct
from slm_jax.data.templates.interleave import SpanInterleave, WordAlignedInterleave
from slm_jax.data.templates.sequence import SequenceBuilder
from slm_jax.data.templates.utterance import SkipExample, Utterance

TEMPLATES = {t.name: t for t in (TextLM, SpeechLM, ASR, TTS, SpanInterleave,
                                 WordAlignedInterleave, Instruct)}

_LAZY = {"apply_template": "preprocessors", "template_example": "preprocessors",
         "skip_counts": "preprocessors", "reset_skip_counts": "preprocessors",
         "tokenize_utterance": "tokenize", "tokenize_numpy": "tokenize",
         "word_frame_spans": "tokenize"}


def __getattr__(name):
  if name in _LAZY:
    import importlib  # pylint: disable=import-outside-toplevel
    return getattr(importlib.import_module(f"slm_jax.data.templates.{_LAZY[name]}"), name)
  raise AttributeError(name)


__all__ = ["Template", "TextLM", "SpeechLM", "ASR", "TTS", "SpanInterleave",
           "WordAlignedInterleave", "Instruct", "SequenceBuilder", "SkipExample", "Utterance",
           "TEMPLATES"] + list(_LAZY)
