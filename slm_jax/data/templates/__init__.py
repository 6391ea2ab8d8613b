"""Templates: tokenized utterances -> training sequences in the unified vocabulary.

docs/data_contract.md sections 2 -> 3. Each template is a gin-configurable dataclass:

    TextLM, SpeechLM, ASR, TTS                  (basic.py)
    WordTTS                                     (word_tts.py: word-interleaved TTS)
    SpanInterleave, WordAlignedInterleave       (interleave.py)
    Instruct                                    (instruct.py)

    out = ASR()(Utterance(...), seed, unified_vocab, max_length)   # numpy, one example
    ds = apply_template(ds, template=ASR(), vocab=unified_vocab)    # seqio preprocessor

The tokenized utterances come from slm_jax/data/tokenize.py (contract 1 -> 2). The numpy core
needs no TensorFlow; the seqio preprocessors (preprocessors.py) are imported on first use.
"""
from slm_jax.data.templates.base import Template
from slm_jax.data.templates.basic import ASR, TTS, SpeechLM, TextLM
from slm_jax.data.templates.instruct import Instruct
from slm_jax.data.templates.interleave import SpanInterleave, WordAlignedInterleave
from slm_jax.data.templates.sequence import SequenceBuilder
from slm_jax.data.templates.utterance import SkipExample, Utterance
from slm_jax.data.templates.word_tts import WordTTS

TEMPLATES = {t.name: t for t in (TextLM, SpeechLM, ASR, TTS, WordTTS, SpanInterleave,
                                 WordAlignedInterleave, Instruct)}

_PREPROCESSORS = ("apply_template", "template_example", "skip_counts", "reset_skip_counts")


def __getattr__(name):
  if name in _PREPROCESSORS:  # seqio and TensorFlow load only when these are used
    from slm_jax.data.templates import preprocessors  # pylint: disable=import-outside-toplevel
    return getattr(preprocessors, name)
  raise AttributeError(name)


__all__ = ["Template", "TextLM", "SpeechLM", "ASR", "TTS", "WordTTS", "SpanInterleave",
           "WordAlignedInterleave", "Instruct", "SequenceBuilder", "SkipExample", "Utterance",
           "TEMPLATES"] + list(_PREPROCESSORS)
