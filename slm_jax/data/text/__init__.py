"""Text vocabularies: sentencepiece, bytes, Hugging Face tokenizers; all seqio Vocabularies.

    vocab = get_text_vocabulary("sentencepiece", "spm.model")
    vocab.name, vocab.size                       # UnifiedVocab.text_vocab_name / text_size
    ids, lens = vocab.encode_words(["hello", "world"])   # docs/data_contract.md section 2

The kinds are listed once, in factory.KINDS.
"""
from slm_jax.data.text.base import TextVocab, TextVocabError
from slm_jax.data.text.byte_vocab import ByteVocab
from slm_jax.data.text.factory import KINDS, TEXT_VOCAB_KINDS, get_text_vocabulary, text_vocab_class
from slm_jax.data.text.hf_vocab import HFTokenizerVocab
from slm_jax.data.text.sentencepiece_vocab import SentencePieceVocab, train_sentencepiece

__all__ = ["TextVocab", "TextVocabError", "ByteVocab", "SentencePieceVocab", "HFTokenizerVocab",
           "get_text_vocabulary", "text_vocab_class", "train_sentencepiece", "KINDS",
           "TEXT_VOCAB_KINDS"]
