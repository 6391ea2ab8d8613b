"""On-disk layout of a corpus folder, its (atomic) writers, and the reader other stages use.

```
DIR/audio/<split>/<id>.wav       16 kHz int16 mono
DIR/manifest_<split>.jsonl       one utterance per line (docs/data_contract.md section 1,
                                 with `audio_path` relative to DIR instead of `audio`)
DIR/texts.txt                    normalized train sentences (one per line; sentencepiece input)
DIR/build_info.json              counts, hours, voices, seed
```
"""
import json
import os
from typing import Any, Iterator

import numpy as np
import soundfile as sf

from slm_jax.atomic_write import atomic_path, atomic_write
from slm_jax.data import audio as audio_lib

SPLITS = ("train", "validation", "test", "test_real")
SAMPLE_RATE = 16000


def manifest_path(corpus_dir: str, split: str) -> str:
  return os.path.join(corpus_dir, f"manifest_{split}.jsonl")


def write_text(path: str, text: str) -> None:
  atomic_write(path, text)


def write_json(path: str, obj: Any) -> None:
  atomic_write(path, json.dumps(obj, indent=1, sort_keys=True))


def write_wav(path: str, audio: np.ndarray, sample_rate: int = SAMPLE_RATE) -> None:
  """Writes int16 mono PCM WAV atomically."""
  audio = np.asarray(audio)
  if audio.dtype != np.int16 or audio.ndim != 1:
    raise ValueError(f"write_wav wants int16[P] mono audio, got {audio.dtype}{list(audio.shape)}")
  with atomic_path(path, suffix=".wav") as tmp:
    sf.write(tmp, audio, sample_rate, subtype="PCM_16", format="WAV")


def write_manifest(corpus_dir: str, split: str, records: list[dict]) -> None:
  lines = "".join(json.dumps(r, sort_keys=True) + "\n" for r in sorted(records,
                                                                       key=lambda r: r["id"]))
  write_text(manifest_path(corpus_dir, split), lines)


def read_manifest(corpus_dir: str, split: str) -> list[dict]:
  """The utterance records of one split (no audio loaded)."""
  path = manifest_path(corpus_dir, split)
  if not os.path.exists(path):
    raise FileNotFoundError(f"no manifest {path}; build the corpus first: "
                            f"`slm-data build-demo --out {corpus_dir}`")
  with open(path, encoding="utf-8") as f:
    return [json.loads(line) for line in f if line.strip()]


def load_audio(corpus_dir: str, record: dict) -> np.ndarray:
  """int16[P] samples of one record. A missing, empty, corrupt or wrong-rate file is an
  AudioError naming the file (`slm_jax.data.audio.read_audio` does the checks)."""
  path = os.path.join(corpus_dir, record["audio_path"])
  audio, rate = audio_lib.read_audio(path, mono=False)
  expected = record.get("sample_rate", SAMPLE_RATE)
  if rate != expected or audio.ndim != 1:
    raise audio_lib.AudioError(f"audio file {path!r}: expected mono {expected} Hz audio as the "
                               f"manifest says, got {rate} Hz shape {audio.shape}; rebuild the "
                               "corpus")
  return audio_lib.to_int16(audio)   # exact for 16-bit files


def iter_utterances(corpus_dir: str, split: str, with_audio: bool = True) -> Iterator[dict]:
  """Utterance dicts of docs/data_contract.md section 1 (`audio` int16[P] if with_audio)."""
  for record in read_manifest(corpus_dir, split):
    utt = dict(record)
    if with_audio:
      utt["audio"] = load_audio(corpus_dir, record)
    yield utt
