"""The TTS loopback's generation modes: "words" speaks through word injection (inference/word_tts.py),
the result says which mode spoke, and the demo picks "words" when its config trains word TTS."""
import pytest

from slm_jax.data.speech.dmel import DMelTokenizer
from slm_jax.data.text.byte_vocab import ByteVocab
from slm_jax.evaluation import tts_eval
from slm_jax.evaluation.eval_sets import EvalUtterance
from slm_jax.inference import word_tts
from slm_jax.inference.session import Session
from slm_jax.models.build import build
from slm_jax.models.config import ModelConfig
from slm_jax.unified_vocab import UnifiedVocab


@pytest.fixture(scope="module")
def session():
  text, speech = ByteVocab(), DMelTokenizer()
  vocab = UnifiedVocab(text_size=text.size, speech_codebook_sizes=tuple(speech.codebook_sizes))
  cfg = ModelConfig(vocab=vocab, num_layers=1, embed_dim=32, num_heads=4, num_kv_heads=2,
                    head_dim=8, mlp_dim=64, init_std=0.3, attention_impl="xla",
                    tie_embeddings=False)
  model = build(cfg, seed=0)
  # A model that speaks: no text id is ever most likely (their output columns are zero).
  kernel = model.heads.kernel
  kernel[...] = kernel[...].at[:, vocab.text_start:vocab.speech_start].set(0.0)
  return Session.from_model(model, text_vocab=text, speech_tokenizer=speech)


def test_words_mode_speaks_through_word_injection(session, tmp_path):
  utts = [EvalUtterance("a", "the cat sat", None), EvalUtterance("b", "hello", None)]
  heard = []
  out = tts_eval.evaluate_tts(session, utts, str(tmp_path), mode="words", max_new_tokens=5,
                              max_positions_per_word=2, slots=2, progress=False,
                              transcribe=lambda audio, rate: heard.append(audio.size) or "the")
  assert out["mode"] == "words" and out["utterances"] == 2 and "wer" in out
  assert len(heard) == 2                          # both sentences were spoken
  expected = word_tts.synthesize_words(session, [u.text for u in utts], max_positions_per_word=2,
                                       max_total=5, progress=False)
  samples = [session.decode_speech(f).size if len(f) else 0 for f in expected]
  assert sorted(heard) == sorted(s for s in samples if s)
  assert out["empty_answers"] == sum(1 for f in expected if not len(f))
  assert 0 < out["generation_seconds"] <= out["seconds"]
  whole = tts_eval.evaluate_tts(session, utts, None, max_new_tokens=3, progress=False,
                                transcribe=lambda audio, rate: "the")
  assert whole["mode"] == "whole"
  with pytest.raises(tts_eval.TtsModeError, match="words"):
    tts_eval.evaluate_tts(session, utts, None, mode="syllables")


def test_the_demo_evaluates_with_words_when_it_trains_word_tts():
  from slm_jax.tools import demo  # pylint: disable=import-outside-toplevel
  assert demo.tts_mode(demo.DEFAULT_RATES) == "words"
  _, whole = demo.check_gin_params([demo.DEMO_GIN], ["include 'tasks/demo_main_whole.gin'"])
  assert demo.tts_mode(whole) == "whole" and "demo_tts_words" not in whole
  _, rates = demo.check_gin_params([demo.DEMO_GIN], ["demo_main_rates.tts = 0.5"])
  assert demo.tts_mode(rates) == "words" and rates["demo_tts"] == 0.5   # both layouts
  _, rates = demo.check_gin_params([demo.DEMO_GIN], ["demo_main_rates.tts_words = 0.0"])
  assert demo.tts_mode(rates) == "whole"
