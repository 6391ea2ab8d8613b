"""SpecAugment-style masks on conditioning speech (data/pipeline/speech_masking.py)."""
import json

import numpy as np
import pytest

from slm_jax.configuration import ConfigError
from slm_jax.data import cache
from slm_jax.data.pipeline import grain_pipeline
from slm_jax.data.pipeline.speech_masking import SpeechMasking, conditioning_speech_runs, mask_row
from slm_jax.data.synthetic import synthetic_examples
from slm_jax.unified_vocab import UnifiedVocab

# K = 6 channels: 2 stacked frames x 3 "mel bins", 8 levels each.
VOCAB = UnifiedVocab(text_size=50, speech_codebook_sizes=(8,) * 6)
L = 64


def _row():
  """An ASR document (speech 3..8 read only) then a TTS one (speech 13..15 trained), as packed."""
  v, s = VOCAB, VOCAB.special_id
  rng = np.random.default_rng(0)
  sp = list(v.speech_start + rng.integers(1, 8, 6))
  asr = [s("<bos>"), s("[ASR]"), s("[SPEECH]")] + sp + [s("[TEXT]"), v.text_start + 3]
  tts = [s("<bos>"), s("[TTS]"), v.text_start + 4, s("[SPEECH]")] + list(v.speech_start + rng.integers(1, 8, 3))
  tokens = np.array(asr + tts + [0] * 3, np.int32)
  seg = np.array([1] * len(asr) + [2] * len(tts) + [0] * 3, np.int32)
  weights = np.zeros(len(tokens), np.float32)
  weights[len(asr) - 3] = 1.0                        # [TEXT] -> text answer is trained
  weights[len(asr) + 3:len(asr) + len(tts) - 1] = 1.0   # [SPEECH] -> each TTS frame is trained
  codes = np.where((tokens >= v.speech_start)[:, None], rng.integers(1, 8, (len(tokens), 5)), 0)
  return {"tokens": tokens, "segment_ids": seg, "loss_weights": weights,
          "speech_codes": codes.astype(np.int32), "targets": np.roll(tokens, -1)}


def _all_codes(row):
  return np.concatenate([np.where(row["tokens"] >= VOCAB.speech_start,
                                  row["tokens"] - VOCAB.speech_start, -1)[:, None],
                         row["speech_codes"]], 1)


def test_only_speech_that_is_read_forms_runs():
  row = _row()
  assert conditioning_speech_runs(row, VOCAB.speech_start) == [(3, 9)]


def test_a_full_time_mask_silences_a_frame_span_of_the_prompt_only():
  row = _row()
  m = SpeechMasking(time_masks=1, max_time_width=100, max_time_ratio=1.0, band_masks=0, max_band_width=0,
                    stack=2, mel_bins=3)
  rng = np.random.default_rng(1)
  out = None
  for _ in range(20):                       # widths are random; find a nonzero one
    out = mask_row(row, rng, m, VOCAB.speech_start)
    if (_all_codes(out) != _all_codes(row)).any():
      break
  before, after = _all_codes(row), _all_codes(out)
  changed = (before != after).any(1)
  assert changed[3:9].any() and not changed[:3].any() and not changed[9:].any()
  frames = after[3:9].reshape(12, 3)        # 6 positions x 2 frames, 3 bins each
  masked = (frames == 0).all(1) & (before[3:9].reshape(12, 3) != 0).any(1)
  idx = np.flatnonzero(masked)
  assert len(idx) and (np.diff(idx) == 1).all(), "one contiguous span of whole frames"
  for k in ("segment_ids", "loss_weights", "targets"):
    np.testing.assert_array_equal(out[k], row[k])


def test_a_band_mask_covers_the_same_bins_of_every_frame():
  row = _row()
  m = SpeechMasking(time_masks=0, band_masks=1, max_band_width=3, stack=2, mel_bins=3)
  rng = np.random.default_rng(5)
  for _ in range(20):
    out = mask_row(row, rng, m, VOCAB.speech_start)
    if (_all_codes(out) != _all_codes(row)).any():
      break
  frames = _all_codes(out)[3:9].reshape(12, 3)
  zero_bins = (frames == 0).all(0)
  assert zero_bins.any()
  np.testing.assert_array_equal(frames[:, ~zero_bins], _all_codes(row)[3:9].reshape(12, 3)[:, ~zero_bins])


def test_bad_settings_are_config_errors():
  with pytest.raises(ConfigError, match="max_band_width"):
    SpeechMasking(mel_bins=10, max_band_width=11)
  with pytest.raises(ConfigError, match="speech channels"):
    SpeechMasking(stack=4, mel_bins=80).check_channels(6, 8)


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory):
  root = tmp_path_factory.mktemp("mask_cache")
  exs = list(synthetic_examples(VOCAB, 60, mean_len=20, seed=4, max_len=L + 1))
  cache.write_cache(exs, str(root / "a"), VOCAB, task="a", num_shards=2, progress=False)
  return str(root / "a")


def _make(cache_dir, masking):
  return grain_pipeline.make_grain_iterator(
      [cache_dir], [1.0], seq_len=L, batch_size=4, seed=3, vocab=VOCAB, num_packing_bins=4,
      process_index=0, process_count=1, speech_masking=masking)


def test_pipeline_masks_inputs_only_deterministically_and_resumes_exactly(cache_dir):
  m = SpeechMasking(time_masks=2, max_time_width=4, max_time_ratio=0.5, band_masks=1,
                    max_band_width=2, stack=2, mel_bins=3)
  plain = [next(it) for it in [_make(cache_dir, None)] for _ in range(6)]
  a_it = _make(cache_dir, m)
  masked = [next(a_it) for _ in range(6)]
  assert any((p["speech_codes"] != q["speech_codes"]).any() for p, q in zip(plain, masked))
  for p, q in zip(plain, masked):
    for k in p:
      if k not in ("tokens", "speech_codes"):
        np.testing.assert_array_equal(p[k], q[k], err_msg=k)
  it = _make(cache_dir, m)
  for _ in range(3):
    next(it)
  state = json.loads(json.dumps(it.get_state()))
  resumed = _make(cache_dir, m)
  resumed.set_state(state)
  for want in masked[3:]:
    got = next(resumed)
    for k in want:
      np.testing.assert_array_equal(got[k], want[k], err_msg=k)
