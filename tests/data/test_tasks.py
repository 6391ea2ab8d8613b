"""seqio tasks and mixtures on a tiny fake corpus (sine-tone words, byte vocab, dMel tokenizer)."""
import json
import os

import gin
import numpy as np
import pytest
import seqio
import soundfile as sf

import slm_jax.tasks  # noqa: F401  (registers the demo tasks)
from slm_jax.configuration import ConfigError
from slm_jax.data.templates import reset_skip_counts, skip_counts
from slm_jax.unified_vocab import BOS_ID, EOS_ID, UnifiedVocab
from slm_jax.tasks import demo

SR = 16000
SENTENCES = {"train": ["the cat sat", "a dog ran far away", "hello there", ""],
             "validation": ["good night moon"]}


def _utterance(corpus, split, i, text, timed=True):
  words = text.split()
  audio, starts, ends, t = [np.zeros(int(0.15 * SR))], [], [], 0.15
  for j, _ in enumerate(words):
    dur = 0.12 + 0.04 * j
    n = int(dur * SR)
    audio += [0.3 * np.sin(2 * np.pi * (300 + 150 * j) * np.arange(n) / SR), np.zeros(int(0.08 * SR))]
    starts.append(round(t, 3))
    ends.append(round(t + dur, 3))
    t += dur + 0.08
  wav = np.concatenate(audio)
  uid = f"{split}-{i}"
  rel = f"audio/{split}/{uid}.wav"
  os.makedirs(os.path.join(corpus, f"audio/{split}"), exist_ok=True)
  sf.write(os.path.join(corpus, rel), (wav * 32767).astype(np.int16), SR, subtype="PCM_16")
  return {"id": uid, "text": text, "words": words, "word_starts": starts if timed else [],
          "word_ends": ends if timed else [], "audio_path": rel, "sample_rate": SR,
          "speaker": f"sine-{'ab'[i % 2]}", "split": split}


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
  d = str(tmp_path_factory.mktemp("corpus"))
  for split, sents in SENTENCES.items():
    recs = [_utterance(d, split, i, s) for i, s in enumerate(sents)]
    with open(os.path.join(d, f"manifest_{split}.jsonl"), "w") as f:
      f.writelines(json.dumps(r) + "\n" for r in recs)
    name = "texts.txt" if split == "train" else f"texts_{split}.txt"
    with open(os.path.join(d, name), "w") as f:
      f.writelines(s + "\n" for s in sents if s)
  recs = [_utterance(d, "test_real", 0, "no timings here", timed=False)]
  with open(os.path.join(d, "manifest_test_real.jsonl"), "w") as f:
    f.writelines(json.dumps(r) + "\n" for r in recs)
  return d


def _configure(corpus, text_size=256):
  gin.parse_config([
      f"demo_corpus_dir.path = '{corpus}'",
      "demo_text_vocab.kind = 'bytes'",
      "demo_speech_tokenizer.kind = 'dmel'",
      f"UnifiedVocab.text_size = {text_size}",
      "UnifiedVocab.speech_codebook_sizes = " + str((16,) * 80),
  ])
  return UnifiedVocab(text_size=text_size, speech_codebook_sizes=(16,) * 80)


def _examples(name, split="train", seed=0, sequence_length=None):
  ds = seqio.get_mixture_or_task(name).get_dataset(sequence_length=sequence_length, split=split,
                                                    shuffle=False, seed=seed)
  return list(ds.as_numpy_iterator())


def test_names_registered_and_registration_idempotent():
  tasks = ["demo_text_lm", "demo_speech_lm", "demo_asr", "demo_tts", "demo_interleaved_span",
           "demo_interleaved_word", "demo_instruct", "demo_tts_words"]
  assert set(tasks) <= set(seqio.TaskRegistry.names())
  assert demo.register() == tasks
  assert demo.register() == tasks  # twice: replaces, never crashes
  import slm_jax.tasks.demo  # noqa: F401,F811  (re-import)
  mix = seqio.get_mixture_or_task("demo_spiritlm_thirds")
  assert sorted(t.name for t in mix.tasks) == ["demo_interleaved_word", "demo_speech_lm", "demo_text_lm"]
  assert {mix.get_rate(t) for t in mix.tasks} == {1.0}
  assert len(seqio.get_mixture_or_task("demo_all").tasks) == 7   # demo_tts_words: rate 0


def test_missing_corpus_is_a_clear_error(tmp_path):
  gin.parse_config([f"demo_corpus_dir.path = '{tmp_path}/nope'"])
  with pytest.raises(FileNotFoundError, match="slm-data build-demo"):
    _examples("demo_text_lm")


def test_every_task_produces_contract_examples(corpus):
  vocab = _configure(corpus)
  reset_skip_counts()
  for name in ["demo_text_lm", "demo_speech_lm", "demo_asr", "demo_tts", "demo_interleaved_span",
               "demo_interleaved_word", "demo_instruct"]:
    exs = _examples(name)
    # the utterance with an empty transcript is skipped, except by speech LM (it has speech)
    assert len(exs) == (4 if name == "demo_speech_lm" else 3), name
    for ex in exs:
      tokens, mask = ex["tokens"], ex["loss_mask"]
      assert tokens[0] == BOS_ID and tokens[-1] == EOS_ID and tokens.dtype == np.int32
      assert mask.shape == tokens.shape and mask.sum() > 0 and mask[0] == 0
      assert tokens.max() < vocab.size
      # K = 80: every task carries speech_codes (same structure, so tasks can be mixed)
      assert ex["speech_codes"].shape == (tokens.size, 79)
      assert (ex["speech_codes"][~vocab.is_speech(tokens)] == 0).all()
      if "interleaved" not in name:  # (short interleaved sentences may be a single text span)
        assert vocab.is_speech(tokens).any() == (name != "demo_text_lm")
  counts = skip_counts()
  # each text-needing speech task met the empty transcript once and counted it
  for t in ("asr", "tts", "interleaved_span", "interleaved_word", "instruct"):
    assert counts[f"{t}/empty_transcript"] == 1, counts
  assert not any(k.startswith(("speech_lm/", "text_lm/")) for k in counts), counts


def test_asr_answer_is_the_transcript(corpus):
  vocab = _configure(corpus)
  exs = _examples("demo_asr")
  texts = []
  for ex in exs:
    answer = ex["tokens"][ex["loss_mask"] > 0][:-1]  # minus EOS
    texts.append(bytes(vocab.unified_to_text(answer).astype(np.uint8).tolist()).decode())
  assert texts == [s for s in SENTENCES["train"] if s]


def _answers(vocab, exs, speech: bool):
  """Each example's trained answer: its text (ASR) or its number of speech positions (TTS)."""
  out = []
  for ex in exs:
    answer = ex["tokens"][ex["loss_mask"] > 0][:-1]  # minus EOS
    out.append(int(vocab.is_speech(answer).sum()) if speech else
               bytes(vocab.unified_to_text(answer).astype(np.uint8).tolist()).decode())
  return out


def test_select_speakers_scopes_one_task(corpus):
  """`demo_tts/select_speakers.speakers` keeps only those voices in TTS; ASR keeps every voice."""
  vocab = _configure(corpus)
  all_tts = _answers(vocab, _examples("demo_tts"), speech=True)
  assert len(all_tts) == 3  # the empty transcript is skipped
  gin.parse_config(["demo_tts/select_speakers.speakers = ['ine-b']"])  # substring of 'sine-b'
  tts = _answers(vocab, _examples("demo_tts"), speech=True)
  asr = _answers(vocab, _examples("demo_asr"), speech=False)
  assert tts == [all_tts[1]]  # utterance 1 ("a dog ran far away") is the only sine-b one kept
  assert asr == [s for s in SENTENCES["train"] if s]
  gin.parse_config(["demo_tts/select_speakers.speakers = ['nobody']"])
  assert _examples("demo_tts") == []


@pytest.mark.parametrize("bad", ["'sine-a'", "[]", "['']"])
def test_select_speakers_rejects_a_malformed_list(corpus, bad):
  _configure(corpus)
  gin.parse_config([f"demo_tts/select_speakers.speakers = {bad}"])
  with pytest.raises(ConfigError, match="select_speakers.speakers"):
    _examples("demo_tts")


def test_interleaved_deterministic_given_seed(corpus):
  _configure(corpus)
  a = [e["tokens"].tolist() for e in _examples("demo_interleaved_span", seed=7)]
  b = [e["tokens"].tolist() for e in _examples("demo_interleaved_span", seed=7)]
  assert a == b


def test_unaligned_real_speech_split(corpus):
  _configure(corpus)
  reset_skip_counts()
  assert len(_examples("demo_asr", split="test_real")) == 1
  assert _examples("demo_interleaved_word", split="test_real") == []
  assert skip_counts()["interleaved_word/no_alignment"] == 1


def test_sequence_length_truncates(corpus):
  _configure(corpus)
  for name in ("demo_speech_lm", "demo_asr", "demo_interleaved_word"):
    for ex in _examples(name, sequence_length={"tokens": 60, "loss_mask": 60}):
      assert len(ex["tokens"]) <= 60 and ex["tokens"][-1] == EOS_ID


def test_mixture_draws_from_all_three_thirds(corpus):
  vocab = _configure(corpus)
  ds = seqio.get_mixture_or_task("demo_spiritlm_thirds").get_dataset(
      sequence_length=None, split="train", shuffle=False, seed=0, num_epochs=None)
  tags = {int(ex["tokens"][1]) for ex in ds.take(30).as_numpy_iterator()}
  assert tags == {vocab.special_id(t) for t in ("[TEXT_LM]", "[SPEECH_LM]", "[INTERLEAVE]")}


def test_vocabulary_mismatch_is_a_clear_error(corpus):
  _configure(corpus, text_size=100)
  with pytest.raises(ValueError, match="UnifiedVocab.text_size"):
    _examples("demo_text_lm")


@pytest.mark.parametrize("task_file", ["tasks/demo_spiritlm_thirds.gin", "tasks/demo_all.gin"])
def test_gin_task_files_parse_and_drive_the_tasks(corpus, task_file):
  from slm_jax import configuration  # pylint: disable=import-outside-toplevel
  configuration.parse(["models/demo_14m.gin", task_file], [
      f"DEMO_CORPUS_DIR = '{corpus}'", "demo_text_vocab.kind = 'bytes'",
      "demo_speech_tokenizer.kind = 'dmel'", "UnifiedVocab.text_size = 256",
      "UnifiedVocab.speech_codebook_sizes = " + str((16,) * 80),
      "demo_interleaved_span/SpanInterleave.speech_fraction = 1.0"], finalize=False)
  name = gin.query_parameter("%TASK_OR_MIXTURE")
  assert seqio.get_mixture_or_task(name).name == name
  assert demo.demo_corpus_dir() == corpus
  vocab = UnifiedVocab()
  for ex in _examples("demo_interleaved_span"):  # the task-scoped binding applies
    content = ex["tokens"][3:-1]
    assert ex["tokens"][2] == vocab.special_id("[SPEECH]") and vocab.is_speech(content).all()


def test_tfds_source_gives_the_same_examples(corpus, tmp_path):
  _configure(corpus)
  manifest = [e["tokens"].tolist() for e in _examples("demo_asr", split="validation")]
  gin.parse_config(["demo_source.kind = 'tfds'", f"demo_source.tfds_data_dir = '{tmp_path}'"])
  assert [e["tokens"].tolist() for e in _examples("demo_asr", split="validation")] == manifest


def test_tts_words_task_its_speaker_filter_and_its_rate_in_demo_main(corpus, tmp_path):
  """demo_tts_words builds word-interleaved examples (one [SPEECH] per word), follows its own
  select_speakers, is in demo_main by default and leaves it at demo_main_rates.tts_words = 0
  (whole-sentence TTS instead), and is cached."""
  import json as json_lib  # pylint: disable=import-outside-toplevel
  from slm_jax.data.cache.tasks import cache_splits  # pylint: disable=import-outside-toplevel
  vocab = _configure(corpus)
  exs = _examples("demo_tts_words")
  assert len(exs) == 3
  words = [len(s.split()) for s in SENTENCES["train"] if s]
  for ex, n in zip(exs, words):
    tokens = ex["tokens"]
    assert tokens[1] == vocab.special_id("[TTS]")
    assert (tokens == vocab.special_id("[SPEECH]")).sum() == n
    assert ex["loss_mask"][tokens == vocab.special_id("[TEXT]")].tolist() == [0] + [1] * (n - 1)
  gin.parse_config(["demo_tts_words/select_speakers.speakers = ['ine-b']"])
  assert len(_examples("demo_tts_words")) == 1
  gin.parse_config(["demo_tts_words/select_speakers.speakers = None"])
  mix = seqio.get_mixture_or_task("demo_main")
  assert sorted(t.name for t in mix.tasks) == ["demo_asr", "demo_text_lm", "demo_tts_words"]
  gin.parse_config(["demo_main_rates.tts = 1.0", "demo_main_rates.tts_words = 0.0"])
  assert sorted(t.name for t in mix.tasks) == ["demo_asr", "demo_text_lm", "demo_tts"]
  gin.parse_config(["demo_main_rates.tts = 0.0", "demo_main_rates.tts_words = 1.0"])
  out = str(tmp_path / "cache")
  infos = cache_splits("demo_main", {"validation": out}, vocab, progress=False)
  assert sorted(i.task for i in infos) == ["demo_asr", "demo_text_lm", "demo_tts_words"]
  with open(os.path.join(out, "mixture.json")) as f:
    assert json_lib.load(f)["rates"] == {"demo_asr": 2.0, "demo_text_lm": 0.25,
                                         "demo_tts_words": 1.0}
  assert [i.num_examples for i in infos if i.task == "demo_tts_words"] == [1]
