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
