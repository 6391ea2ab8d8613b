"""Speech tokenizers: audio float32[P] <-> frames int32[T, K] (docs/architecture.md).

    tok = get_speech_tokenizer("dmel")                 # or "kmeans" / "precomputed" with a path
    frames_TK = tok.encode(audio, sample_rate)         # int32[T, K]
    audio = tok.decode(frames_TK)                      # where the tokenizer can
    tok.name, tok.codebook_sizes, tok.frame_rate       # UnifiedVocab.speech_tokenizer_name etc.

The kinds are listed once, in factory.KINDS.
"""
from slm_jax.data.speech.base import SpeechTokenizer, SpeechTokenizerError, validate_frames
from slm_jax.data.speech.dmel import DMelTokenizer
from slm_jax.data.speech.factory import (KINDS, SPEECH_TOKENIZER_KINDS, get_speech_tokenizer,
                                         load_speech_tokenizer, speech_tokenizer_class)
from slm_jax.data.speech.kmeans import (KMeansTokenizer, dedup_units, fit_kmeans_tokenizer,
                                        kmeans)
from slm_jax.data.speech.mel import MelConfig, log_mel, log_mel_batch, mel_to_audio
from slm_jax.data.speech.precomputed import PrecomputedUnits, write_array_record

__all__ = ["SpeechTokenizer", "SpeechTokenizerError", "validate_frames", "DMelTokenizer", "KINDS",
           "SPEECH_TOKENIZER_KINDS", "get_speech_tokenizer", "load_speech_tokenizer",
           "speech_tokenizer_class", "KMeansTokenizer", "dedup_units", "fit_kmeans_tokenizer",
           "kmeans", "MelConfig", "log_mel", "log_mel_batch", "mel_to_audio", "PrecomputedUnits",
           "write_array_record"]
