"""Resynthesis WER of the speech tokenizers against the original audio, in one run.

  python bench/speech_resynthesis.py                                   # 40 flite sentences
  python bench/speech_resynthesis.py --corpus data/demo_corpus --split test --speaker flite \
      --num 60 --kmeans data/demo_corpus/tokenizers/kmeans512 --iters 32,64

Recognizes each utterance with pocketsphinx as is (the peer: the ceiling) and after the round
trip encode -> decode of dMel (Griffin-Lim with each --iters) and, given --kmeans DIR, of a
fitted k-means tokenizer. Without --corpus it synthesizes fortune sentences with flite's `slt`
voice (Debian `flite`, `fortunes`). Prints WER with its S/D/I counts and the decode speed.
"""
from __future__ import annotations

import argparse
import os
import sys
import time


sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from slm_jax.data.corpus import flite, manifest  # noqa: E402
from slm_jax.data.corpus.fortunes import fortune_sentences  # noqa: E402
from slm_jax.data.transcript import normalize_transcript  # noqa: E402
from slm_jax.data.speech import load_speech_tokenizer  # noqa: E402
from slm_jax.data.speech.dmel import DMelTokenizer  # noqa: E402
from slm_jax.evaluation.recognizer import PocketsphinxRecognizer  # noqa: E402
from slm_jax.evaluation.resynthesis import Utterance, resynthesis_wer  # noqa: E402


def corpus_utterances(corpus_dir: str, split: str, speaker: str, num: int) -> list[Utterance]:
  records = [r for r in manifest.read_manifest(corpus_dir, split)
             if not speaker or speaker in r["speaker"]][:num]
  if not records:
    raise SystemExit(f"no utterances of speaker '{speaker}' in {corpus_dir} split {split}")
  return [Utterance(manifest.load_audio(corpus_dir, r), r.get("sample_rate", manifest.SAMPLE_RATE),
                    r["text"]) for r in records]


def flite_utterances(num: int, voice: str = "slt") -> list[Utterance]:
  out = []
  for sentence in fortune_sentences()[::37]:
    words = normalize_transcript(sentence).split()
    try:
      flite.check_words(sentence, words)
    except flite.TextMismatchError:
      continue
    audio, _, _ = flite.synthesize(sentence, words, voice)
    out.append(Utterance(audio, 16000, " ".join(words)))
    if len(out) == num:
      break
  return out


def main() -> None:
  p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  p.add_argument("--corpus", help="a corpus folder (slm-data build-demo); default: synthesize "
                 "fortune sentences with flite")
  p.add_argument("--split", default="test")
  p.add_argument("--speaker", default="flite", help="keep utterances whose speaker contains it")
  p.add_argument("--num", type=int, default=40)
  p.add_argument("--iters", default="32,64", help="Griffin-Lim iterations to compare (dMel)")
  p.add_argument("--kmeans", help="a fitted k-means tokenizer directory (slm-data fit-kmeans)")
  args = p.parse_args()

  t0 = time.perf_counter()
  utts = (corpus_utterances(args.corpus, args.split, args.speaker, args.num) if args.corpus
          else flite_utterances(args.num))
  print(f"{len(utts)} utterances, {sum(len(u.audio) / u.sample_rate for u in utts):.0f} s of "
        f"speech ({args.corpus or 'flite slt, synthesized now'}; "
        f"{time.perf_counter() - t0:.0f} s to load)")
  recognizer = PocketsphinxRecognizer()
  tokenizers = [(f"dMel 80x16 @ 80 Hz, Griffin-Lim {n} it", DMelTokenizer(griffin_lim_iters=n))
                for n in (int(x) for x in args.iters.split(","))]
  if args.kmeans:
    for n in (int(x) for x in args.iters.split(",")):
      km = load_speech_tokenizer(args.kmeans)
      km.griffin_lim_iters = n
      tokenizers.append((f"k-means {km.num_units} @ {km.rate:g} Hz, Griffin-Lim {n} it", km))

  seconds = sum(len(u.audio) / u.sample_rate for u in utts)
  originals = None
  for label, tok in tokenizers:
    t0 = time.perf_counter()
    report = resynthesis_wer(tok, utts, recognizer.transcribe, originals)
    dt = time.perf_counter() - t0
    if originals is None:
      originals = list(report.original_hypotheses)
      print(f"{'original audio (peer: the ceiling)':48s} {report.original}")
    print(f"{label:48s} {report.resynthesized}   [{dt:.0f} s incl. ASR, "
          f"{seconds / dt:.1f}x real time]")


if __name__ == "__main__":
  main()
