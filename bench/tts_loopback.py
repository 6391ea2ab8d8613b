"""TTS loopback on more sentences than the demo's evaluation: one export, one table.

  python bench/tts_loopback.py --checkpoint runs/demo/export \
      --manifest data/demo_corpus/manifest_test.jsonl --sentences 48 [--mode words]

The first N distinct sentences of the manifest are spoken greedily by the model (`--mode whole`:
the TTS prompt with the whole text; `words`: word-interleaved, each word injected as the model
ends the previous one), decoded to audio by the export's speech tokenizer and transcribed by
pocketsphinx, as `slm-eval` does for its 12 sentences. The hypotheses are scored against each
row's `orig_text` when it has one (a corpus whose prompts are pronunciations,
bench/tts_prompt_corpus.py), else its `text`, beside the deranged baseline (the same hypotheses
against the other sentences' references: speech that ignores its text scores the same on both).
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import sys

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))


def distinct_rows(manifest: str, n: int) -> list[dict]:
  rows, seen = [], set()
  with open(manifest, encoding="utf-8") as f:
    for line in f:
      r = json.loads(line)
      if line.strip() and r["text"] not in seen:
        seen.add(r["text"])
        rows.append(r)
  return rows[:n]


def main(argv=None) -> int:
  p = argparse.ArgumentParser(description=__doc__,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("--checkpoint", required=True, help="an inference checkpoint (slm-export)")
  p.add_argument("--manifest", required=True, help="jsonl rows with text (and orig_text)")
  p.add_argument("--sentences", type=int, default=48)
  p.add_argument("--mode", choices=("whole", "words"), default="whole")
  p.add_argument("--examples", type=int, default=4, help="transcripts to print")
  args = p.parse_args(argv)
  from slm_jax.evaluation import baselines, generation, recognizer  # pylint: disable=import-outside-toplevel
  from slm_jax.evaluation.error_rates import error_rates  # pylint: disable=import-outside-toplevel
  from slm_jax.inference.session import Session  # pylint: disable=import-outside-toplevel

  rows = distinct_rows(args.manifest, args.sentences)
  session = Session.load(args.checkpoint)
  prompts = [r["text"] for r in rows]
  refs = [r.get("orig_text", r["text"]) for r in rows]
  budgets = [generation.speech_budget(session, t) for t in refs]
  if args.mode == "words":
    from slm_jax.inference.word_tts import synthesize_words  # pylint: disable=import-outside-toplevel
    frames = synthesize_words(session, prompts, max_total=budgets, progress=False)
  else:
    frames = generation.synthesize(session, prompts, max_new_tokens=budgets, progress=False)
  rate = session.speech_tokenizer.sample_rate
  audios = [session.decode_speech(f) if len(f) else np.zeros([0], np.float32) for f in frames]
  hyps = recognizer.transcribe_many([(a, rate) for a in audios], recognizer.default_workers())
  got = error_rates(refs, hyps)
  base = baselines.baselines(refs, hyps)
  seconds = np.mean([len(f) for f in frames]) / session.speech_tokenizer.frame_rate
  print(f"# {datetime.date.today()} {platform.node()} {os.cpu_count()} cpus; "
        f"{' '.join(sys.argv)}")
  print(f"{len(rows)} sentences of {args.manifest}, checkpoint {args.checkpoint}, "
        f"{args.mode} mode\n")
  print("| loopback WER / CER | deranged baseline WER / CER | mean answer |")
  print("|---|---|---|")
  print(f"| {got.wer:.1%} / {got.cer:.1%} | {base['deranged_wer']:.1%} / "
        f"{base['deranged_cer']:.1%} | {seconds:.2f} s |\n")
  for ref, hyp in list(zip(refs, hyps))[:args.examples]:
    print(f"- {ref!r} -> heard as {hyp!r}")
  return 0


if __name__ == "__main__":
  sys.exit(main())
