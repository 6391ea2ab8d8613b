"""Text vocabularies: sentencepiece, bytes, Hugging Face tokenizers; all seqio Vocabularies.

    vocab = get_text_vocabulary("sentencepiece", "spm.model")
    vocab.name, vocab.size                       # UnifiedVocab.text_vocab_name / text_size
    ids, lens = vocab.encode_words(["hello", "world"])   # docs/data_contract.md section 2
"""
from slm_jax.data.text.base import TextVocab
from slm_jax.data.text.byte_vocab import ByteVocab
from slm_jax.data.text.factory import TEXT_VOCAB_KINDS, get_text_vocabulary
from slm_jax.data.text.hf_vocab import HFTokenizerVocab
from slm_jax.data.text.sentencepiece_vocab import SentencePieceVocab, train_sentencepiece

__all__ = ["TextVocab", "ByteVocab", "SentencePieceVocab", "HFTokenizerVocab",
           "get_text_vocabulary", "train_sentencepiece", "TEXT_VOCAB_KINDS"]
