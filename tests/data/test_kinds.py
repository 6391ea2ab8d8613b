"""Speech tokenizer and text vocabulary kinds are decided once, in each factory's KINDS table."""
import re

import numpy as np
import pytest

from slm_jax.data import speech, text
from slm_jax.data.speech import (DMelTokenizer, KMeansTokenizer, PrecomputedUnits,
                                 SpeechTokenizerError, get_speech_tokenizer)


def test_speech_kinds_come_from_one_table(tmp_path):
  assert speech.SPEECH_TOKENIZER_KINDS == tuple(speech.KINDS) == ("dmel", "kmeans", "precomputed")
  assert all(cls.kind == kind for kind, cls in speech.KINDS.items())
  saved = {"dmel": DMelTokenizer(num_levels=8),
           "kmeans": KMeansTokenizer(np.arange(4 * 80, dtype=np.float32).reshape(4, 80)),
           "precomputed": PrecomputedUnits("hubert-km5", (5,), 50.0)}
  assert set(saved) == set(speech.KINDS)
  for kind, tok in saved.items():
    tok.save(str(tmp_path / kind))
    assert get_speech_tokenizer(kind, str(tmp_path / kind)).name == tok.name
    assert speech.load_speech_tokenizer(str(tmp_path / kind)).kind == kind
    other = next(k for k in speech.KINDS if k != kind)
    with pytest.raises(SpeechTokenizerError, match=f"not '{other}'"):
      get_speech_tokenizer(other, str(tmp_path / kind))
  assert [k for k, cls in speech.KINDS.items() if not cls.needs_files] == ["dmel"]
  assert isinstance(get_speech_tokenizer("dmel"), DMelTokenizer)
  for kind in ("kmeans", "precomputed"):
    with pytest.raises(SpeechTokenizerError, match="needs a path"):
      get_speech_tokenizer(kind)
  with pytest.raises(SpeechTokenizerError, match=re.escape(str(speech.SPEECH_TOKENIZER_KINDS))):
    speech.speech_tokenizer_class("mimi")


def test_a_default_speech_tokenizer_follows_the_gin_bindings_in_force():
  """A kind built without files reads the bindings of the moment: a later config (another test,
  a notebook's second run) must not get the first one's tokenizer."""
  import gin  # pylint: disable=import-outside-toplevel
  import slm_jax.data.speech.mel  # noqa: F401  pylint: disable=import-outside-toplevel,unused-import
  assert get_speech_tokenizer("dmel").mel.n_mels == 80
  gin.parse_config("MelConfig.n_mels = 40")
  assert get_speech_tokenizer("dmel").mel.n_mels == 40
  gin.clear_config()
  assert get_speech_tokenizer("dmel").mel.n_mels == 80


def test_text_kinds_come_from_one_table():
  assert text.TEXT_VOCAB_KINDS == tuple(text.KINDS) == ("sentencepiece", "bytes", "hf_tokenizers")
  assert all(cls.kind == kind for kind, cls in text.KINDS.items())
  assert [k for k, cls in text.KINDS.items() if not cls.needs_files] == ["bytes"]
  assert isinstance(text.get_text_vocabulary("bytes"), text.ByteVocab)
  for kind in ("sentencepiece", "hf_tokenizers"):
    with pytest.raises(text.TextVocabError, match="needs a path"):
      text.get_text_vocabulary(kind)
  with pytest.raises(text.TextVocabError, match="unknown text vocabulary kind 'wordpiece'"):
    text.text_vocab_class("wordpiece")
