"""Real recorded speech with transcripts from Debian's `pocketsphinx-testdata` (split test_real).

Two sets there have transcripts: five LibriVox sentences (Austen, "Sense and Sensibility") and
five CMU "cards" utterances. No word timings exist for them: `words` is filled,
`word_starts` / `word_ends` are empty lists.
"""
import os
import re

import numpy as np
import soundfile as sf

from slm_jax.data.corpus.errors import missing_package
from slm_jax.data.transcript import normalize_transcript

TESTDATA_DIR = "/usr/share/pocketsphinx/test/data"
# (sub-folder, transcription file, speaker)
_SETS = (("librivox", "transcription", "librivox-austen"),
         ("cards", "cards.transcription", "cmu-cards"))
_LINE = re.compile(r"^\s*<s>(.*)</s>\s*\((\S+)\)\s*$")


def real_utterances(testdata_dir: str = TESTDATA_DIR):
  """Yields (id, transcript, speaker, audio int16[P] 16 kHz)."""
  if not os.path.isdir(testdata_dir):
    raise missing_package(f"pocketsphinx test data ({testdata_dir})", "pocketsphinx-testdata")
  for folder, trans_name, speaker in _SETS:
    trans_path = os.path.join(testdata_dir, folder, trans_name)
    if not os.path.exists(trans_path):
      continue
    with open(trans_path, encoding="utf-8") as f:
      for line in f:
        m = _LINE.match(line)
        if not m:
          continue
        text, file_id = normalize_transcript(m.group(1)), m.group(2)
        audio, rate = sf.read(os.path.join(testdata_dir, folder, file_id + ".wav"),
                              dtype="int16")
        if rate != 16000 or audio.ndim != 1:
          raise ValueError(f"{folder}/{file_id}.wav: expected 16 kHz mono, got {rate} Hz")
        short = file_id.rsplit("-", 1)[-1]
        yield f"{folder}-{short}", text, speaker, np.asarray(audio, np.int16)
