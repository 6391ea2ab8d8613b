"""Demo-corpus pieces: fortunes text, phone/word alignment, flite and espeak-ng word timings."""
import numpy as np
import pytest

from slm_jax.data.corpus import align, build, fortunes, real_speech, voices
from slm_jax.data.corpus.errors import MissingPackageError
from slm_jax.data.transcript import normalize_transcript


# -- fortunes text ------------------------------------------------------------------------------
def test_split_records_on_percent_lines():
  raw = "First one.\n%\nSecond\nline two.\n%\n%\nThird.\n"
  assert list(fortunes.split_records(raw)) == ["First one.", "Second\nline two.", "Third."]


@pytest.mark.parametrize("record,expected", [
    ("A tall, dark stranger\n  will have   more fun than you.",
     "A tall, dark stranger will have more fun than you."),
    ('He said "go away" twice.', "He said go away twice."),
    ("Time flies like an arrow. -- Groucho Marx", "Time flies like an arrow."),
    ("Too short.", None),  # < 15 characters
    ("There are 10 kinds of people in this world.", None),  # digits
    ("Look at http://example.com for more.", None),  # '/'
    ("x" * 101, None),
])
def test_clean_sentence(record, expected):
  assert fortunes.clean_sentence(record) == expected


def test_normalize_transcript():
  assert normalize_transcript("Don't panic!  'Tis   FINE.") == "don't panic tis fine"
  assert normalize_transcript("A well-known (odd) fact: yes...") == (
      "a well known odd fact yes")


def test_fortune_sentences_are_clean_and_distinct():
  sents = fortunes.fortune_sentences()
  assert len(sents) > 5000
  keys = [normalize_transcript(s) for s in sents]
  assert len(set(keys)) == len(keys)
  assert all(15 <= len(s) <= 100 for s in sents)
  assert all(k == k.lower() and not any(c.isdigit() for c in k) for k in keys)


def test_missing_fortunes_is_a_clear_error(tmp_path):
  with pytest.raises(MissingPackageError, match="apt-get install fortunes"):
    fortunes.fortune_files(str(tmp_path / "nope"))


# -- alignment ----------------------------------------------------------------------------------
def test_align_labels_match_substitution_insertion():
  ref = ["dh", "ax", "k", "ae", "t"]
  hyp = ["dh", "iy", "k", "ae", "ae", "t"]  # "ax" -> "iy", one extra "ae"
  labels = align.align_labels(ref, hyp)
  assert labels[0] == 0 and labels[1] == 1 and labels[-1] == 4
  assert sum(lab is None for lab in labels) == 1


def test_word_times_from_segments():
  words = [["hh", "ax", "l", "ow"], ["w", "er", "l", "d"]]
  segs = [("pau", 0.1), ("hh", 0.2), ("eh", 0.3), ("l", 0.4), ("ow", 0.5), ("pau", 0.7),
          ("w", 0.8), ("er", 0.9), ("l", 1.0), ("d", 1.1), ("pau", 1.3)]
  starts, ends = align.word_times(words, segs)
  assert starts == pytest.approx([0.1, 0.7]) and ends == pytest.approx([0.5, 1.1])


def test_word_without_phones_is_an_alignment_error():
  with pytest.raises(align.AlignmentError, match="got no spoken phone"):
    align.word_times([["ae"], ["b", "iy"], ["s", "iy"]], [("ae", 0.1), ("s", 0.2), ("iy", 0.3)])


# -- synthesis with word timings ----------------------------------------------------------------
TEXT = "a tall, dark stranger will have more fun than you."
WORDS = normalize_transcript(TEXT).split()


def _rms(audio, t0, t1):
  seg = audio[int(t0 * 16000):int(t1 * 16000)].astype(np.float64)
  return float(np.sqrt((seg ** 2).mean())) if len(seg) else 0.0


def _check_timings(audio, starts, ends):
  duration = len(audio) / 16000
  assert len(starts) == len(ends) == len(WORDS)
  assert all(0 <= s < e <= duration + 1e-6 for s, e in zip(starts, ends))
  assert all(e <= s2 + 1e-6 for e, s2 in zip(ends[:-1], starts[1:]))
  # Speech energy lies inside the words: each word is loud, the leading silence is not.
  loud = np.median([_rms(audio, s, e) for s, e in zip(starts, ends)])
  assert min(_rms(audio, s, e) for s, e in zip(starts, ends)) > 0.15 * loud
  assert _rms(audio, 0, starts[0]) < 0.1 * loud
  # The comma after "tall" is a pause: quieter than the words around it.
  gap = (ends[1], starts[2])
  assert gap[1] - gap[0] > 0.03 and _rms(audio, *gap) < 0.3 * loud


@pytest.mark.parametrize("voice", ["slt", "kal16"])
def test_flite_word_timings_follow_the_speech(voice):
  from slm_jax.data.corpus import flite
  audio, starts, ends = flite.synthesize(TEXT, WORDS, voice)
  assert audio.dtype == np.int16 and len(audio) > 16000
  _check_timings(audio, starts, ends)


def test_flite_rejects_text_it_reads_differently():
  from slm_jax.data.corpus import flite
  with pytest.raises(flite.TextMismatchError, match="flite reads"):
    flite.check_words("dr. smith is here.", ["dr", "smith", "is", "here"])
  flite.check_words("it's a well-known fact.", ["it's", "a", "well", "known", "fact"])


# Texts flite reads as written, differently ("dr." -> "doctor", digits), as several utterances
# in a file ("?" / "!": `-t` reads one), and one that is the batch marker itself.
BATCH_TEXTS = ["a tall, dark stranger will have more fun than you.", "dr. smith is here.",
               "what? you have 3 cats!", "it's a well-known fact.", "blick.",
               "the end: a moral."]


def _count_runs(monkeypatch, flite):
  runs = []
  real = flite._run
  monkeypatch.setattr(flite, "_run", lambda *a, **k: runs.append(a) or real(*a, **k))
  return runs


def test_batched_word_readings_equal_one_run_per_text(monkeypatch):
  from slm_jax.data.corpus import flite
  alone = [flite._read("-pw", t).split() for t in BATCH_TEXTS]
  runs = _count_runs(monkeypatch, flite)
  assert flite.read_words(BATCH_TEXTS) == alone
  assert len(runs) < 2 * len(BATCH_TEXTS)
  words = [normalize_transcript(t).split() for t in BATCH_TEXTS]
  rejected = [m is not None for m in flite.word_mismatches(BATCH_TEXTS, words)]
  assert rejected == [False, True, True, False, False, False]
  assert build._check_sentences(BATCH_TEXTS) == [not r for r in rejected]
  runs.clear()  # plain texts: one flite run for all of them
  assert flite.read_words([BATCH_TEXTS[0], BATCH_TEXTS[3]]) == [alone[0], alone[3]]
  assert len(runs) == 1


def test_batched_pronunciations_equal_one_run_per_text(monkeypatch):
  from slm_jax.data.corpus import flite
  lists = [normalize_transcript(t).split() for t in BATCH_TEXTS] + [["dr", "who"]]
  alone = []
  for words in lists:
    try:
      alone.append(flite.word_pronunciations(words))
    except flite.TextMismatchError as e:
      alone.append(str(e))
  runs = _count_runs(monkeypatch, flite)
  batched = flite.batch_pronunciations(lists)
  shown = lambda results: [str(r) if isinstance(r, Exception) else r for r in results]  # noqa: E731
  assert shown(batched) == alone
  assert isinstance(batched[-1], flite.TextMismatchError)  # "dr. who." -> one word "doctor who"
  runs.clear()  # without the marker text: one flite run for all of them
  assert shown(flite.batch_pronunciations(lists[:4] + lists[5:])) == alone[:4] + alone[5:]
  assert len(runs) == 1
  audio, starts, ends = flite.synthesize(TEXT, WORDS, "kal16", batched[0])
  again = flite.synthesize(TEXT, WORDS, "kal16")
  assert np.array_equal(audio, again[0]) and (starts, ends) == again[1:]


def test_missing_flite_is_a_clear_error(monkeypatch):
  from slm_jax.data.corpus import flite
  monkeypatch.setattr(flite.shutil, "which", lambda _: None)
  with pytest.raises(MissingPackageError, match="apt-get install flite"):
    flite.flite_binary()


# espeak.py forks a child per utterance; nothing here runs JAX threads, so JAX's warning is moot.
@pytest.mark.filterwarnings("ignore:os.fork:RuntimeWarning")
def test_espeak_word_timings_follow_the_speech():
  from slm_jax.data.corpus import espeak
  audio, starts, ends = espeak.synthesize(TEXT, WORDS, "en-us+f3", 150, 60)
  assert audio.dtype == np.int16 and len(audio) > 16000
  _check_timings(audio, starts, ends)
  again = espeak.synthesize(TEXT, WORDS, "en-us+f3", 150, 60)
  assert np.array_equal(again[0], audio) and again[1] == starts  # no state between utterances
  # Unstressed words spoken with a neighbour ("in the") still get their own time span.
  words = "stand in the hall and shout fire".split()
  audio, starts, ends = espeak.synthesize("stand in the hall, and shout fire!", words)
  assert len(starts) == 7 and all(s < e for s, e in zip(starts, ends))
  assert all(e <= s2 + 1e-6 for e, s2 in zip(ends[:-1], starts[1:]))
  with pytest.raises(ValueError, match="no voice"):
    espeak.synthesize(TEXT, WORDS, "no-such-voice", 150, 50)


# -- voices, splits, real speech ----------------------------------------------------------------
def test_parse_voice_and_speaker_names():
  v = voices.parse_voice("espeak:en-us+f3:150:60@0.5")
  assert (v.engine, v.name, v.rate, v.pitch, v.weight) == ("espeak", "en-us+f3", 150, 60, 0.5)
  assert v.speaker == "espeak-en-us+f3-r150-p60" and "+" not in v.tag
  assert voices.parse_voice(v.spec).speaker == v.speaker
  assert voices.parse_voice("flite:slt").speaker == "flite-slt"
  for bad in ["flite:kal", "espeak:en-us", "festival:x", "espeak:en:fast:50"]:
    with pytest.raises(ValueError, match="bad voice spec"):
      voices.parse_voice(bad)


def test_pick_voices_distinct_deterministic_and_weighted():
  pool = [voices.parse_voice(s) for s in voices.DEFAULT_VOICES]
  picks = [voices.pick_voices(pool, 2, np.random.default_rng([0, i])) for i in range(400)]
  again = [voices.pick_voices(pool, 2, np.random.default_rng([0, i])) for i in range(400)]
  assert picks == again
  assert all(a != b for a, b in picks)
  flite_share = np.mean([v.engine == "flite" for p in picks for v in p])
  assert 0.6 < flite_share < 0.85


def test_split_of_is_deterministic_with_the_right_fractions():
  texts = [f"sentence number {i}" for i in range(4000)]
  splits = [build.split_of(t) for t in texts]
  assert splits == [build.split_of(t) for t in texts]
  frac = {s: splits.count(s) / len(splits) for s in build.SYNTH_SPLITS}
  assert abs(frac["train"] - 0.9) < 0.03 and abs(frac["test"] - 0.05) < 0.02


def test_real_speech_from_pocketsphinx_testdata():
  utts = list(real_speech.real_utterances())
  assert len(utts) == 10
  ids = [u[0] for u in utts]
  assert len(set(ids)) == 10 and "librivox-0880" in ids
  by_id = {u[0]: u for u in utts}
  assert by_id["librivox-0880"][1] == "he was not an ill disposed young man"
  assert all(a.dtype == np.int16 and len(a) > 8000 for _, _, _, a in utts)
