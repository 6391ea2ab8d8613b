"""Phone-interleaved TTS ablation: a copy of a flite demo corpus whose "words" are timed phones.

  python bench/tts_phone_corpus.py --corpus data/demo_corpus --out data/demo_corpus_phones

Every flite utterance is spoken again from its fortune sentence with the same voice (flite is
deterministic; a row whose audio length differs is dropped and counted) to read the spoken phones
and their end times (`flite -psdur`). Each row's `words` become those phones (two-letter codes, as
bench/tts_prompt_corpus.py writes them; silences dropped, their time split between neighbours by
the templates), `word_starts` / `word_ends` the phones' times and `text` their codes joined, so
the word-interleaved TTS template interleaves phone by phone:

    [TTS] [TEXT] ww [SPEECH] s [TEXT] ah [SPEECH] s s [TEXT] nn [SPEECH] ...

and `bench/tts_loopback.py --mode words` speaks a sentence phone by phone (its prompt: the test
row's phones). Every task then reads phones (ASR becomes phone recognition); the transcript stays
in `orig_text`, which the loopback scores against. The real recordings get their words' isolated
pronunciations, untimed. Audio and pairwise sets are linked, not copied.

The phone texts hold too few distinct symbols for the demo's 512-piece sentencepiece model, so
train its tokenizer first at the size sentencepiece allows and give the model that text size
(measured 2026-12-01: BENCHMARKS.md, "Phone-interleaved TTS"):

  python -m slm_jax.tools.data train-spm --input OUT/texts.txt --vocab_size 65 \
      --out OUT/tokenizers/spm512
  python -m slm_jax.tools.demo --workdir=runs/phones --corpus_dir=OUT \
      --gin_param "UnifiedVocab.text_size = 65"
"""
from __future__ import annotations

import concurrent.futures
import functools
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))   # tts_prompt_corpus

from slm_jax.data.corpus import align, flite, fortunes  # noqa: E402
from slm_jax.data.transcript import normalize_transcript  # noqa: E402
from tts_prompt_corpus import code, corpus_args, write_corpus  # noqa: E402

def phone_row(job: tuple[dict, str]) -> dict | None:
  """The row with timed phones for words, or None when flite's speech differs from the row's."""
  row, sentence = job
  voice = row["speaker"].split("-", 1)[1]
  out = flite._run(["-voice", voice, "-psdur", "-t", sentence, "-o", "none"])  # pylint: disable=protected-access
  segments = flite.parse_psdur(out)
  if abs(segments[-1][1] - row["duration"]) > 0.2:
    return None
  phones, starts, ends, previous_end = [], [], [], 0.0
  for phone, end in segments:
    end = min(end, row["duration"])
    if phone not in align.SILENCE_PHONES and end > previous_end:
      phones.append(code(phone))
      starts.append(round(previous_end, 4))
      ends.append(round(end, 4))
    previous_end = end
  if not phones:
    return None
  return dict(row, orig_text=row["text"], text=" ".join(phones), words=phones,
              word_starts=starts, word_ends=ends)


def phone_rows(pool, sentence_of: dict, split: str, rows: list[dict]) -> list[dict]:
  """The split's rows with timed phones (respoken by flite from `pool`'s threads); the real recordings with their
  words' isolated pronunciations, untimed."""
  if split == "test_real":
    prons = flite.batch_pronunciations([r["text"].split() for r in rows])
    return [dict({k: v for k, v in r.items() if not k.startswith("word")}, orig_text=r["text"],
                 text=" ".join(code(ph) for w in pr for ph in w))
            for r, pr in zip(rows, prons) if not isinstance(pr, Exception)]
  jobs = [(r, sentence_of[r["text"]]) for r in rows
          if r["speaker"].startswith("flite-") and r["text"] in sentence_of]
  return [r for r in pool.map(phone_row, jobs) if r is not None]


def main(argv=None) -> int:
  args = corpus_args(__doc__, argv)
  sentence_of = {normalize_transcript(s): s for s in fortunes.fortune_sentences()}
  with concurrent.futures.ThreadPoolExecutor(2) as pool:   # the work is flite's, in its processes
    return write_corpus(args, functools.partial(phone_rows, pool, sentence_of))


if __name__ == "__main__":
  sys.exit(main())
