"""Templates on known inputs: exact sequences, markers, loss masks, codes, truncation, errors."""
import numpy as np
import pytest

from slm_jax.data.templates import (ASR, TTS, Instruct, SkipExample, SpanInterleave, SpeechLM,
                                    TextLM, Utterance, WordAlignedInterleave)
from slm_jax.data.templates.interleave import TEXT, SPEECH
from slm_jax.unified_vocab import BOS_ID, EOS_ID, UnifiedVocab

V1 = UnifiedVocab(text_size=100, speech_codebook_sizes=(10,))
V2 = UnifiedVocab(text_size=100, speech_codebook_sizes=(10, 4))
TS, SS = V1.text_start, V1.speech_start  # 35, 135


def sid(name, v=V1):
  return v.special_id(name)


def utt3(k=1):
  """3 words: text ids [5,6] [7] [8,9]; 12 frames; words at frames [1,4) [4,6) [8,11)."""
  frames = np.stack([np.arange(12) % 10, np.arange(12) % 4], 1)[:, :k].astype(np.int32)
  return Utterance(np.array([5, 6, 7, 8, 9], np.int32), np.array([2, 1, 2], np.int32), frames,
                   np.array([[1, 4], [4, 6], [8, 11]], np.int32))


def speech(frames0):
  """Unified ids of utt3's channel-0 frames at these frame indices (codes are index % 10)."""
  return [SS + int(f) % 10 for f in frames0]


TEXT_ALL = [TS + i for i in (5, 6, 7, 8, 9)]
SPEECH_ALL = speech(np.arange(12) % 10)


def test_text_lm_exact():
  out = TextLM()(utt3(), 0, V1)
  assert out["tokens"].tolist() == [BOS_ID, sid("[TEXT_LM]")] + TEXT_ALL + [EOS_ID]
  assert out["loss_mask"].tolist() == [0, 0, 1, 1, 1, 1, 1, 1]
  assert "speech_codes" not in out
  assert out["tokens"].dtype == np.int32 and out["loss_mask"].dtype == np.float32


def test_speech_lm_exact():
  out = SpeechLM()(utt3(), 0, V1)
  assert out["tokens"].tolist() == [BOS_ID, sid("[SPEECH_LM]")] + SPEECH_ALL + [EOS_ID]
  assert out["loss_mask"].tolist() == [0, 0] + [1] * 13


def test_asr_trains_only_text_answer():
  out = ASR()(utt3(), 0, V1)
  assert out["tokens"].tolist() == ([BOS_ID, sid("[ASR]"), sid("[SPEECH]")] + SPEECH_ALL +
                                    [sid("[TEXT]")] + TEXT_ALL + [EOS_ID])
  assert out["loss_mask"].tolist() == [0] * 16 + [1] * 6


def test_tts_trains_only_speech_answer():
  out = TTS()(utt3(), 0, V1)
  assert out["tokens"].tolist() == ([BOS_ID, sid("[TTS]"), sid("[TEXT]")] + TEXT_ALL +
                                    [sid("[SPEECH]")] + SPEECH_ALL + [EOS_ID])
  assert out["loss_mask"].tolist() == [0] * 9 + [1] * 13


def test_speech_codes_for_k2():
  out = TTS()(utt3(k=2), 0, V2)
  codes = out["speech_codes"]
  assert codes.shape == (22, 1) and codes.dtype == np.int32
  is_speech = V2.is_speech(out["tokens"])
  assert is_speech.sum() == 12
  assert codes[is_speech, 0].tolist() == (np.arange(12) % 4).tolist()
  assert (codes[~is_speech] == 0).all()
  assert V2.unified_to_speech(out["tokens"][is_speech]).tolist() == (np.arange(12) % 10).tolist()


def test_markers_configurable_and_droppable():
  out = ASR(task_tag="", speech_marker="", text_marker="[SEP]")(utt3(), 0, V1)
  assert out["tokens"].tolist() == [BOS_ID] + SPEECH_ALL + [sid("[SEP]")] + TEXT_ALL + [EOS_ID]
  with pytest.raises(KeyError, match="unknown special"):
    TextLM(task_tag="[NOPE]")(utt3(), 0, V1)


def test_span_interleave_known_plan():
  t = SpanInterleave()
  seq = t.build(utt3(), [(0, 1, SPEECH), (1, 3, TEXT)], V1).finish()
  # speech of word 0 = frames [1, 4), then text of words 1-2
  assert seq["tokens"].tolist() == ([BOS_ID, sid("[INTERLEAVE]"), sid("[SPEECH]")] + speech([1, 2, 3]) +
                                    [sid("[TEXT]")] + [TS + 7, TS + 8, TS + 9, EOS_ID])
  assert seq["loss_mask"].tolist() == [0, 0] + [1] * 9
  seq = t.build(utt3(), [(0, 1, TEXT), (1, 3, SPEECH)], V1).finish()
  # speech of words 1-2 = frames [4, 11): exactly those words, inner pause included
  assert seq["tokens"].tolist() == ([BOS_ID, sid("[INTERLEAVE]"), sid("[TEXT]"), TS + 5, TS + 6,
                                     sid("[SPEECH]")] + speech(range(4, 11)) + [EOS_ID])
  no_markers = SpanInterleave(text_marker="", speech_marker="", task_tag="")
  seq = no_markers.build(utt3(), [(0, 1, TEXT), (1, 3, SPEECH)], V1).finish()
  assert seq["tokens"].tolist() == [BOS_ID, TS + 5, TS + 6] + speech(range(4, 11)) + [EOS_ID]


def test_word_aligned_tiles_audio_at_pause_midpoints():
  t = WordAlignedInterleave()
  starts, ends = t.speech_bounds(utt3())
  # boundaries: 0 | (4+4+1)//2=4 | (6+8+1)//2=7 | 12
  assert starts.tolist() == [0, 4, 7] and ends.tolist() == [4, 7, 12]
  seq = t.build(utt3(), [(0, 2, SPEECH), (2, 3, TEXT)], V1).finish()
  assert seq["tokens"].tolist() == ([BOS_ID, sid("[INTERLEAVE]"), sid("[SPEECH]")] + speech(range(7)) +
                                    [sid("[TEXT]"), TS + 8, TS + 9, EOS_ID])


def _long_utt(num_words=40, seed=0, k=1):
  """Words with unique single text ids 0..W-1 and 3 frames each, one-frame pauses."""
  rng = np.random.default_rng(seed)
  spans = np.array([[4 * w + 1, 4 * w + 4] for w in range(num_words)], np.int32)
  frames = rng.integers(0, 10, size=(4 * num_words + 2, k)).astype(np.int32)
  return Utterance(np.arange(num_words, dtype=np.int32), np.ones(num_words, np.int32), frames, spans)


def _segments(tokens, v=V1):
  """Splits an interleaved sequence (markers on) into [(modality, content ids)]."""
  segs = []
  for tok in tokens[2:-1].tolist():
    if tok == v.special_id("[TEXT]"):
      segs.append((TEXT, []))
    elif tok == v.special_id("[SPEECH]"):
      segs.append((SPEECH, []))
    else:
      segs[-1][1].append(tok)
  return segs


@pytest.mark.parametrize("eta", [0.25, 0.7])
def test_span_interleave_fraction_and_exact_alignment(eta):
  utt = _long_utt()
  t = SpanInterleave(mean_span_words=5.0, speech_fraction=eta)
  speech_words = total = 0
  for seed in range(300):
    out = t(utt, seed, V1)
    w = 0
    segs = _segments(out["tokens"])
    for i, (m, ids) in enumerate(segs):
      assert i == 0 or segs[i - 1][0] != m  # spans alternate (same-modality spans merged)
      if m == TEXT:
        n = len(ids)
        assert ids == (TS + np.arange(w, w + n)).tolist()
      else:  # the next text segment says where this speech span ends
        n = (segs[i + 1][1][0] - TS if i + 1 < len(segs) else utt.num_words) - w
        assert ids == (SS + utt.word_frames(w, w + n)[:, 0]).tolist()
        speech_words += n
      w += n
    assert w == utt.num_words
    total += w
  assert abs(speech_words / total - eta) < 0.04


def test_word_aligned_switch_rate():
  utt = _long_utt()
  t = WordAlignedInterleave(switch_prob=0.25)
  n_spans = [len(_segments(t(utt, s, V1)["tokens"])) for s in range(200)]
  assert abs(np.mean(n_spans) - (1 + 39 * 0.25)) < 1.0
  t2 = WordAlignedInterleave(switch_prob=1.0, min_span_words=4)
  assert all(len(_segments(t2(utt, s, V1)["tokens"])) == 10 for s in range(5))


def test_determinism_per_seed():
  utt = _long_utt()
  for t in (SpanInterleave(mean_span_words=3.0), WordAlignedInterleave(), Instruct().bind(
      lambda s: np.array([1, 2], np.int32))):
    a, b = t(utt, [3, 4], V1), t(utt, [3, 4], V1)
    assert a["tokens"].tolist() == b["tokens"].tolist()
    others = {tuple(t(utt, s, V1)["tokens"].tolist()) for s in range(10)}
    assert len(others) > 1


def test_stream_truncation_at_word_boundary_with_untrained_eos():
  out = TextLM()(utt3(), 0, V1, max_length=6)
  # BOS TAG [5 6] [7] fits with EOS in 6; word [8 9] does not
  assert out["tokens"].tolist() == [BOS_ID, sid("[TEXT_LM]"), TS + 5, TS + 6, TS + 7, EOS_ID]
  assert out["loss_mask"].tolist() == [0, 0, 1, 1, 1, 0]
  out = TextLM()(utt3(), 0, V1, max_length=5)  # cut after word 0 (length 5), not inside word 1
  assert out["tokens"].tolist() == [BOS_ID, sid("[TEXT_LM]"), TS + 5, TS + 6, EOS_ID]
  # no full word fits: cut inside the first word rather than dropping the example
  out = TextLM()(utt3(), 0, V1, max_length=4)
  assert out["tokens"].tolist() == [BOS_ID, sid("[TEXT_LM]"), TS + 5, EOS_ID]
  assert len(SpanInterleave()(_long_utt(), 1, V1, max_length=50)["tokens"]) <= 50


def test_speech_lm_truncation_with_and_without_alignment():
  out = SpeechLM()(utt3(), 0, V1, max_length=10)
  # tiles end at word ends: [0,4) [4,6) ...; 2 + 6 + EOS = 9 fits, next tile [6, 11) does not
  assert out["tokens"].tolist() == [BOS_ID, sid("[SPEECH_LM]")] + speech(range(6)) + [EOS_ID]
  u = utt3()
  unaligned = Utterance(u.word_text_ids, u.word_text_lens, u.speech_frames, np.zeros((0, 2), np.int32))
  out = SpeechLM()(unaligned, 0, V1, max_length=10)
  assert out["tokens"].tolist() == [BOS_ID, sid("[SPEECH_LM]")] + speech(range(7)) + [EOS_ID]
  assert out["loss_mask"][-1] == 0


def test_paired_truncation_keeps_prompt_and_answer_aligned():
  out = ASR()(utt3(), 0, V1, max_length=17)
  # first 2 words: speech [0, 6), text [5 6 7]; EOS trained (a complete shorter example)
  assert out["tokens"].tolist() == ([BOS_ID, sid("[ASR]"), sid("[SPEECH]")] + speech(range(6)) +
                                    [sid("[TEXT]"), TS + 5, TS + 6, TS + 7, EOS_ID])
  assert out["loss_mask"].tolist() == [0] * 10 + [1] * 4
  out = TTS()(utt3(), 0, V1, max_length=13)  # 2 words need 14
  assert out["tokens"].tolist() == ([BOS_ID, sid("[TTS]"), sid("[TEXT]"), TS + 5, TS + 6,
                                     sid("[SPEECH]")] + speech(range(4)) + [EOS_ID])
  with pytest.raises(SkipExample, match="too_long"):
    ASR()(utt3(), 0, V1, max_length=6)
  u = utt3()
  unaligned = Utterance(u.word_text_ids, u.word_text_lens, u.speech_frames, np.zeros((0, 2), np.int32))
  with pytest.raises(SkipExample) as e:
    ASR()(unaligned, 0, V1, max_length=17)
  assert e.value.reason == "too_long"
  assert len(ASR()(unaligned, 0, V1)["tokens"]) == 22  # unaligned is fine when it fits


def test_instruct_modes_and_loss_only_on_answer():
  instr = {"speech_to_text": [1], "text_to_speech": [2, 3], "speech_to_speech": [4]}
  t = Instruct().bind(lambda s: np.array(
      instr[{"Write": "speech_to_text", "Say": "text_to_speech"}.get(s.split()[0], "speech_to_speech")], np.int32))
  u = utt3()
  s2t = t.build(u, "speech_to_text", V1).finish()
  assert s2t["tokens"].tolist() == ([BOS_ID, sid("[INSTRUCT]"), sid("[USER]"), sid("[TEXT]"), TS + 1,
                                     sid("[SPEECH]")] + SPEECH_ALL + [sid("[ASSISTANT]"), sid("[TEXT]")] +
                                    TEXT_ALL + [EOS_ID])
  assert s2t["loss_mask"].tolist() == [0] * 19 + [1] * 7
  t2s = t.build(u, "text_to_speech", V1).finish()
  assert t2s["tokens"].tolist() == ([BOS_ID, sid("[INSTRUCT]"), sid("[USER]"), sid("[TEXT]"), TS + 2, TS + 3]
                                    + TEXT_ALL + [sid("[ASSISTANT]"), sid("[SPEECH]")] + SPEECH_ALL + [EOS_ID])
  assert t2s["loss_mask"].tolist() == [0] * 12 + [1] * 14
  only = Instruct(modes=(("speech_to_speech", 1.0),)).bind(lambda s: np.array([4], np.int32))
  assert only.plan(u, np.random.default_rng(0)) == "speech_to_speech"
  with pytest.raises(ValueError, match="no instruction text"):
    Instruct(modes=(("dance", 1.0),))
  with pytest.raises(RuntimeError, match="bind"):
    Instruct()(u, 0, V1)


def test_empty_transcript_and_missing_speech_are_skips_with_reasons():
  empty = Utterance(np.zeros(0, np.int32), np.zeros(0, np.int32), np.zeros((5, 1), np.int32),
                    np.zeros((0, 2), np.int32))
  for t in (TextLM(), ASR(), TTS(), SpanInterleave()):
    with pytest.raises(SkipExample) as e:
      t(empty, 0, V1)
    assert e.value.reason == "empty_transcript"
  text_only = Utterance(np.array([1], np.int32), np.array([1], np.int32), np.zeros((0, 1), np.int32),
                        np.zeros((0, 2), np.int32))
  with pytest.raises(SkipExample, match="no_speech"):
    SpeechLM()(text_only, 0, V1)
  u = utt3()
  with pytest.raises(SkipExample, match="no_alignment"):
    WordAlignedInterleave()(Utterance(u.word_text_ids, u.word_text_lens, u.speech_frames,
                                      np.zeros((0, 2), np.int32)), 0, V1)


def test_out_of_range_ids_are_clear_errors():
  u = utt3()
  with pytest.raises(ValueError, match="text id out of range"):
    TextLM()(Utterance(np.array([5, 100], np.int32), np.array([2], np.int32), u.speech_frames,
                       np.zeros((0, 2), np.int32)), 0, V1)
  bad = u.speech_frames.copy()
  bad[3, 0] = 10
  with pytest.raises(ValueError, match="channel-0 code out of range"):
    SpeechLM()(Utterance(u.word_text_ids, u.word_text_lens, bad, u.word_frame_spans), 0, V1)
  bad2 = utt3(k=2).speech_frames.copy()
  bad2[0, 1] = 4
  with pytest.raises(ValueError, match="channel-1 code out of range"):
    SpeechLM()(Utterance(u.word_text_ids, u.word_text_lens, bad2, u.word_frame_spans), 0, V2)
  with pytest.raises(ValueError, match=r"K=2"):
    SpeechLM()(u, 0, V2)


def test_malformed_utterances_are_rejected():
  with pytest.raises(ValueError, match="sum to"):
    Utterance(np.array([1, 2], np.int32), np.array([1], np.int32), np.zeros((0, 1), np.int32),
              np.zeros((0, 2), np.int32))
  with pytest.raises(ValueError, match="start <= end <= T"):
    Utterance(np.array([1], np.int32), np.array([1], np.int32), np.zeros((3, 1), np.int32),
              np.array([[0, 5]], np.int32))
  with pytest.raises(ValueError, match="speech_fraction"):
    SpanInterleave(speech_fraction=1.5)
