"""The offline recognizer and resynthesis WER on real flite speech (Debian flite, pocketsphinx)."""
import numpy as np
import pytest

from slm_jax.data.corpus import flite
from slm_jax.data.speech.dmel import DMelTokenizer
from slm_jax.data.speech.precomputed import PrecomputedUnits
from slm_jax.evaluation.recognizer import PocketsphinxRecognizer
from slm_jax.evaluation.resynthesis import Utterance, resynthesis_wer
from slm_jax.evaluation.wer import word_errors

SENTENCES = ["the early bird gets the worm but the second mouse gets the cheese",
             "a journey of a thousand miles begins with a single step",
             "never put off until tomorrow what you can do today"]


@pytest.fixture(scope="module")
def utterances():
  out = []
  for s in SENTENCES:
    audio, _, _ = flite.synthesize(s, s.split(), "slt")
    out.append(Utterance(audio, 16000, s))
  return out


@pytest.fixture(scope="module")
def recognizer():
  return PocketsphinxRecognizer()


def test_recognizer_understands_flite_at_any_rate(utterances, recognizer):
  u = utterances[1]  # "a journey of a thousand miles ...": pocketsphinx hears "the journey"
  assert word_errors([u.transcript], [recognizer.transcribe(u.audio, 16000)]).wer <= 0.1
  # The same speech at 8 kHz, float: resampled to the model's 16 kHz before decoding (and
  # worse recognized: the band above 4 kHz is gone).
  import librosa  # pylint: disable=import-outside-toplevel
  audio_8k = librosa.resample(u.audio.astype(np.float32) / 32768, orig_sr=16000, target_sr=8000)
  hyp = recognizer.transcribe(audio_8k, 8000)
  assert len(set(hyp.split()) & set(u.transcript.split())) >= 6
  assert recognizer.transcribe(np.zeros([0], np.int16), 16000) == ""


def test_recognition_does_not_depend_on_what_came_before(utterances, recognizer):
  forward = [recognizer.transcribe(u.audio, 16000) for u in utterances]
  backward = [recognizer.transcribe(u.audio, 16000) for u in reversed(utterances)][::-1]
  assert forward == backward
  noise = np.random.default_rng(0).normal(0, 0.3, 48000).astype(np.float32)
  recognizer.transcribe(noise, 16000)
  assert recognizer.transcribe(utterances[0].audio, 16000) == forward[0]
  assert PocketsphinxRecognizer().transcribe(utterances[2].audio, 16000) == forward[2]


def test_dmel_resynthesis_stays_intelligible(utterances, recognizer):
  report = resynthesis_wer(DMelTokenizer(), utterances, recognizer.transcribe)
  assert report.num_utterances == 3 and report.original.reference_words == 34
  assert report.original.wer <= 0.25
  # Measured over 84 flite utterances: the round trip costs ~0 WER points at 64 Griffin-Lim
  # iterations (BENCHMARKS.md); here a few words of slack on 34.
  assert report.resynthesized.wer <= report.original.wer + 0.15
  # Reusing the originals' hypotheses gives the same report without recognizing them again.
  again = resynthesis_wer(DMelTokenizer(), utterances, recognizer.transcribe,
                          list(report.original_hypotheses))
  assert again == report


def test_tokenizer_without_decoder_is_a_clear_error(utterances, recognizer):
  tok = PrecomputedUnits("glm4voice", codebook_sizes=(16384,), frame_rate=12.5)
  with pytest.raises(ValueError, match="cannot decode"):
    resynthesis_wer(tok, utterances, recognizer.transcribe)
