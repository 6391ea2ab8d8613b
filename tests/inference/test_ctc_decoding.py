"""ASR through the CTC head: best-path collapse, and transcripts read at speech frames only."""
import os
import sys

import jax.numpy as jnp
import numpy as np
import pytest

from slm_jax.inference import ctc_decoding
from slm_jax.models.heads import OutputHeads

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "models"))
from model_testing import make, tiny  # noqa: E402  pylint: disable=wrong-import-position


def test_best_path_drops_blanks_and_repeats():
  assert ctc_decoding.best_path(np.array([0, 3, 3, 0, 3, 5, 5, 5, 0, 0, 1])) == [2, 2, 4, 0]
  assert ctc_decoding.best_path(np.array([0, 0, 0])) == []


class _Session:
  def __init__(self, asr_ctc=True):
    self.model = make(tiny(asr_ctc=asr_ctc))
    self.vocab = self.model.cfg.vocab

  def decode_text(self, ids):
    return " ".join(str(int(i)) for i in ids)


def test_a_model_without_a_ctc_head_is_refused():
  with pytest.raises(ctc_decoding.NoCtcHeadError, match="no CTC head"):
    ctc_decoding.ctc_transcribe(_Session(asr_ctc=False), [np.zeros((3, 1), np.int32)])


def test_transcripts_are_the_best_path_over_the_speech_frames_only(monkeypatch):
  # A head that says "text id 7" at even positions and blank at odd ones. The ASR prompt is
  # [BOS] [ASR] [SPEECH] frames... [TEXT]: frames sit at positions 3, 4, 5, ...
  def head(self, x_BLD):
    even_L = (jnp.arange(x_BLD.shape[1]) % 2 == 0)
    classes_BL = jnp.broadcast_to(jnp.where(even_L, 8, 0), x_BLD.shape[:2])
    return jnp.where(classes_BL[..., None, None] == jnp.arange(self.cfg.vocab.text_size + 1), 1.0, 0.0)
  monkeypatch.setattr(OutputHeads, "ctc_logits", head)
  ctc_decoding._forward.cache_clear()   # pylint: disable=protected-access
  frames = [np.array([[1], [2], [3]], np.int32),            # positions 3, 4, 5: blank 7 blank
            np.array([[4], [5], [6], [7], [8]], np.int32)]  # 3..7: blank 7 blank 7 blank
  out = ctc_decoding.ctc_transcribe(_Session(), frames, batch_size=2, bucket=16)
  ctc_decoding._forward.cache_clear()   # pylint: disable=protected-access
  assert out == ["7", "7 7"]
