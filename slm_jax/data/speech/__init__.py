"""Speech tokenizers: audio float32[S] <-> frames int32[T, K] (DESIGN.md).

    tok = get_speech_tokenizer("dmel")                 # or "kmeans" / "precomputed" with a path
    frames_TK = tok.encode(audio, sample_rate)         # int32[T, K]
    audio = tok.decode(frames_TK)                      # where the tokenizer can
    tok.name, tok.codebook_sizes, tok.frame_rate       # UnifiedVocab.speech_tokenizer_name etc.
"""
from slm_jax.data.speech.base import (SpeechTokenizer, load_speech_tokenizer,
                                      validate_frames)
from slm_jax.data.speech.dmel import DMelTokenizer
from slm_jax.data.speech.factory import SPEECH_TOKENIZER_KINDS, get_speech_tokenizer
from slm_jax.data.speech.kmeans import (KMeansTokenizer, dedup_units, fit_kmeans_tokenizer,
                                        kmeans)
from slm_jax.data.speech.mel import MelConfig, log_mel, log_mel_batch, mel_to_audio
from slm_jax.data.speech.precomputed import PrecomputedUnits, write_array_record

__all__ = ["SpeechTokenizer", "load_speech_tokenizer", "validate_frames",
           "DMelTokenizer",
           "get_speech_tokenizer", "SPEECH_TOKENIZER_KINDS", "KMeansTokenizer", "dedup_units",
           "fit_kmeans_tokenizer", "kmeans", "MelConfig", "log_mel", "log_mel_batch",
           "mel_to_audio", "PrecomputedUnits", "write_array_record"]
