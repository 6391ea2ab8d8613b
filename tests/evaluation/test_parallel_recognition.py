"""pocketsphinx in several processes (recognizer.transcribe_many) equals a serial run."""
import numpy as np
import pytest

pytest.importorskip("pocketsphinx", reason="needs the `asr` extra (pocketsphinx)")

from slm_jax.data.corpus import flite  # noqa: E402
from slm_jax.evaluation import recognizer  # noqa: E402

SENTENCES = ["a journey of a thousand miles begins with a single step",
             "never put off until tomorrow what you can do today",
             "the early bird gets the worm"]


def test_two_workers_give_the_serial_transcripts_in_order():
  items = [(flite.synthesize(s, s.split(), "slt")[0], 16000) for s in SENTENCES]
  rng = np.random.default_rng(0)
  items.insert(1, ((rng.standard_normal(16000) * 3000).astype(np.int16), 16000))   # noise
  items.append((np.zeros([0], np.int16), 16000))                                    # empty
  serial = recognizer.transcribe_many(items, workers=1)
  parallel = recognizer.transcribe_many(items, workers=2)
  assert parallel == serial
  assert serial[-1] == "" and "journey" in serial[0] and "tomorrow" in serial[2]


def test_synthesized_items_are_made_and_recognized_in_the_workers():
  """Griffin-Lim in the recognizer's processes: the audio a worker makes from dMel frames, and its
  transcript, equal what this process makes and hears; given audio comes back without a copy."""
  from slm_jax.data.speech.dmel import DMelTokenizer  # pylint: disable=import-outside-toplevel
  tok = DMelTokenizer()
  audio = flite.synthesize(SENTENCES[1], SENTENCES[1].split(), "slt")[0]
  frames = tok.encode(audio, 16000)
  items = [recognizer.Synthesized(tok.decode, (frames,), tok.sample_rate), (audio, 16000),
           recognizer.Synthesized(tok.decode, (frames[:0],), tok.sample_rate)]
  parallel = recognizer.recognize(items, workers=2)
  serial = recognizer.recognize(items, workers=1)
  made = tok.decode(frames)
  assert np.array_equal(parallel[0].audio, made) and np.array_equal(serial[0].audio, made)
  assert [r.text for r in parallel] == [r.text for r in serial]
  assert "tomorrow" in parallel[0].text and "tomorrow" in parallel[1].text
  assert parallel[1].audio is None and parallel[2].audio.size == 0 and parallel[2].text == ""
  # A recognizer of the caller's runs here, serially, on the same made audio.
  heard = recognizer.recognize(items, workers=2, transcribe=lambda a, rate: f"{a.size}@{rate}")
  assert heard[0].text == f"{made.size}@{tok.sample_rate}" and heard[2].text == ""
