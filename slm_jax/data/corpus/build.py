"""`slm-data build-demo`: the offline demo corpus (fortunes text, flite/espeak-ng speech).

Deterministic given the seed: sentences are shuffled with it, each sentence's voices are drawn
from (seed, sentence hash), and a sentence's split comes from the hash of its transcript alone
(so all its voices share a split, and growing the corpus never moves a sentence). Resumable:
an utterance whose record exists under DIR/.records is not synthesized again; every file is
written atomically, so an interrupted build just continues.
"""
import collections
import hashlib
import json
import multiprocessing
import os
import time
from typing import Sequence

import gin
import numpy as np
import tqdm

from slm_jax.data.corpus import fortunes, manifest, real_speech
from slm_jax.data.corpus.voices import DEFAULT_VOICES, Voice, parse_voice, pick_voices
from slm_jax.data.transcript import normalize_transcript

SYNTH_SPLITS = ("train", "validation", "test")
_RECORDS = ".records"
# Texts per flite run that reads words or phones (flite's start-up costs more than reading a
# sentence), and utterances per worker task: a few dozen keep both workers busy to the end.
_CHECK_BATCH = 64
_SYNTH_BATCH = 16


def sentence_key(transcript: str) -> str:
  return hashlib.sha1(transcript.encode("utf-8")).hexdigest()


def split_of(transcript: str, fractions: Sequence[float] = (0.9, 0.05, 0.05)) -> str:
  """train / validation / test from the transcript's hash (deterministic, seed-free)."""
  u = int(sentence_key(transcript)[:12], 16) / float(16 ** 12)
  edges = np.cumsum(np.asarray(fractions, np.float64) / np.sum(fractions))
  return SYNTH_SPLITS[min(int(np.searchsorted(edges, u, side="right")), 2)]


def _check_sentences(texts: list[str]) -> list[bool]:
  """Whether flite reads each text exactly as its transcript (one flite run for them all)."""
  from slm_jax.data.corpus import flite  # pylint: disable=import-outside-toplevel
  return [m is None for m in flite.word_mismatches(
      texts, [normalize_transcript(t).split() for t in texts])]


def _valid_timings(starts, ends, duration: float) -> bool:
  prev_end = 0.0
  for s, e in zip(starts, ends):
    if not (prev_end - 1e-6 <= s < e <= duration + 1e-6):
      return False
    prev_end = e
  return True


def _existing_record(item: tuple) -> dict | None:
  """The record of an utterance made by an earlier (maybe interrupted) build, if complete."""
  out_dir, utt_id, split, _, transcript, _ = item
  record_path = os.path.join(out_dir, _RECORDS, utt_id + ".json")
  audio_rel = os.path.join("audio", split, utt_id + ".wav")
  if os.path.exists(record_path) and os.path.exists(os.path.join(out_dir, audio_rel)):
    with open(record_path, encoding="utf-8") as f:
      record = json.load(f)
    if record.get("split") == split and record.get("text") == transcript:
      return record
  return None


def _make_utterance(item: tuple, pronunciations=None) -> dict:
  """Synthesizes one (sentence, voice) unless its record exists; returns the record.

  `pronunciations`: the flite words' phones when already read (see `_make_utterances`), or the
  TextMismatchError reading them gave.
  """
  record = _existing_record(item)
  if record is not None:
    return record
  out_dir, utt_id, split, text, transcript, voice_spec = item
  record_path = os.path.join(out_dir, _RECORDS, utt_id + ".json")
  audio_rel = os.path.join("audio", split, utt_id + ".wav")
  voice = parse_voice(voice_spec)
  words = transcript.split()
  try:
    if isinstance(pronunciations, Exception):
      raise pronunciations
    audio, starts, ends = voice.synthesize(text, words, pronunciations)
  except ValueError as e:  # alignment / word-event mismatch: skip this voice, say why
    return {"id": utt_id, "error": f"{voice.engine}: {type(e).__name__}"}
  duration = len(audio) / manifest.SAMPLE_RATE
  if not _valid_timings(starts, ends, duration):
    return {"id": utt_id, "error": f"{voice.engine}: bad word timings"}
  record = {
      "id": utt_id, "text": transcript, "words": words,
      "word_starts": [round(s, 4) for s in starts], "word_ends": [round(e, 4) for e in ends],
      "audio_path": audio_rel, "sample_rate": manifest.SAMPLE_RATE, "speaker": voice.speaker,
      "split": split, "duration": round(duration, 4),
  }
  manifest.write_wav(os.path.join(out_dir, audio_rel), audio)
  manifest.write_json(record_path, record)
  return record


def _make_utterances(items: list[tuple]) -> list[dict]:
  """`_make_utterance` of each item; the words' phones of the flite items still to synthesize
  are read in one flite run."""
  from slm_jax.data.corpus import flite  # pylint: disable=import-outside-toplevel
  transcripts = list(dict.fromkeys(
      item[4] for item in items
      if parse_voice(item[5]).engine == "flite" and _existing_record(item) is None))
  phones = dict(zip(transcripts, flite.batch_pronunciations([t.split() for t in transcripts])))
  return [_make_utterance(item, phones.get(item[4])) for item in items]


def _batches(xs: list, size: int) -> list[list]:
  return [xs[i:i + size] for i in range(0, len(xs), size)]


def _select_sentences(candidates: list[str], count: int, imap) -> list[str]:
  """The first `count` candidates that flite reads exactly as their transcript."""
  chosen, start = [], 0
  while len(chosen) < count and start < len(candidates):
    chunk = candidates[start:start + max(64, int(1.3 * (count - len(chosen))))]
    start += len(chunk)
    oks = [ok for batch in imap(_check_sentences, _batches(chunk, _CHECK_BATCH)) for ok in batch]
    chosen.extend(s for s, ok in zip(chunk, oks) if ok)
  return chosen[:count]


def _real_records(out_dir: str) -> list[dict]:
  records = []
  for utt_id, text, speaker, audio in real_speech.real_utterances():
    rel = os.path.join("audio", "test_real", utt_id + ".wav")
    if not os.path.exists(os.path.join(out_dir, rel)):
      manifest.write_wav(os.path.join(out_dir, rel), audio)
    records.append({
        "id": utt_id, "text": text, "words": text.split(), "word_starts": [], "word_ends": [],
        "audio_path": rel, "sample_rate": manifest.SAMPLE_RATE, "speaker": speaker,
        "split": "test_real", "duration": round(len(audio) / manifest.SAMPLE_RATE, 4)})
  return records


@gin.configurable
def build_demo_corpus(out_dir: str, max_sentences: int = 1500, voices_per_sentence: int = 2,
                      voices: Sequence[str] = DEFAULT_VOICES, seed: int = 0, workers: int = 2,
                      split_fractions: Sequence[float] = (0.9, 0.05, 0.05),
                      include_real: bool = True, fortunes_dir: str = fortunes.FORTUNES_DIR,
                      progress: bool = True) -> dict:
  """Builds (or completes) the demo corpus in `out_dir`; returns build_info.

  Utterances: about max_sentences x voices_per_sentence synthetic ones, plus test_real.
  """
  t0 = time.time()
  voice_list: list[Voice] = [parse_voice(v) for v in voices]
  from slm_jax.data.corpus import flite  # pylint: disable=import-outside-toplevel
  flite.flite_binary()  # clear error when flite is missing
  if any(v.engine == "espeak" for v in voice_list):
    from slm_jax.data.corpus import espeak  # pylint: disable=import-outside-toplevel
    espeak.load_library()  # clear error when espeak-ng is missing
  sentences = fortunes.fortune_sentences(fortunes_dir)
  transcripts = [normalize_transcript(s) for s in sentences]
  splits = [split_of(t, split_fractions) for t in transcripts]
  for split in SYNTH_SPLITS:
    name = "texts.txt" if split == "train" else f"texts_{split}.txt"
    manifest.write_text(os.path.join(out_dir, name),
                        "".join(t + "\n" for t, s in zip(transcripts, splits) if s == split))

  order = np.random.default_rng(seed).permutation(len(sentences))
  candidates = [sentences[i].lower() for i in order]
  # Always worker processes, started fresh ("spawn"): espeak.py forks per utterance, which must
  # not happen in a caller that may run JAX threads.
  pool = multiprocessing.get_context("spawn").Pool(max(1, workers))
  try:
    chosen = _select_sentences(candidates, max_sentences, pool.imap)
    items = []
    for text in chosen:
      transcript = normalize_transcript(text)
      key = sentence_key(transcript)
      rng = np.random.default_rng([seed, int(key[:8], 16)])
      for v in pick_voices(voice_list, voices_per_sentence, rng):
        items.append((out_dir, f"fortunes-{key[:10]}-{v.tag}",
                      split_of(transcript, split_fractions), text, transcript, v.spec))
    records = []
    with tqdm.tqdm(total=len(items), desc="synthesizing", unit="utt", disable=not progress) as bar:
      for batch in pool.imap_unordered(_make_utterances, _batches(items, _SYNTH_BATCH)):
        records.extend(batch)
        bar.update(len(batch))
  finally:
    pool.close()
    pool.join()

  failures = collections.Counter(r["error"] for r in records if "error" in r)
  by_split = {s: [r for r in records if "error" not in r and r["split"] == s]
              for s in SYNTH_SPLITS}
  if include_real:
    by_split["test_real"] = _real_records(out_dir)
  for split, recs in by_split.items():
    manifest.write_manifest(out_dir, split, recs)
  info = {
      "seed": seed, "max_sentences": max_sentences, "voices_per_sentence": voices_per_sentence,
      "voices": list(voices), "split_fractions": list(split_fractions),
      "sample_rate": manifest.SAMPLE_RATE,
      "fortune_sentences": len(sentences), "sentences_used": len(chosen),
      "splits": {s: {"utterances": len(r), "sentences": len({x["text"] for x in r}),
                     "hours": round(sum(x["duration"] for x in r) / 3600, 4)}
                 for s, r in by_split.items()},
      "speakers": dict(sorted(collections.Counter(
          r["speaker"] for recs in by_split.values() for r in recs).items())),
      "failures": dict(failures),
      "word_timings": {"train/validation/test": "from the synthesizer",
                       "test_real": "none (empty word_starts / word_ends)"},
      "build_seconds": round(time.time() - t0, 1),
  }
  info["utterances"] = sum(v["utterances"] for v in info["splits"].values())
  info["hours"] = round(sum(v["hours"] for v in info["splits"].values()), 4)
  manifest.write_json(os.path.join(out_dir, "build_info.json"), info)
  return info
