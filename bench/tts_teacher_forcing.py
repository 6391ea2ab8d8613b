"""Where TTS fails: the model's next-frame predictions with the true speech as history, heard by
the offline recognizer, beside the true frames delayed by one position. One run, one table.

  python bench/tts_teacher_forcing.py --checkpoint runs/demo_long/export \
      --manifest runs/demo_long/eval/part_4000/tts_sentences.jsonl

For each sentence of the manifest (audio path + transcript) the TTS training sequence
`[TTS] [TEXT] text [SPEECH] frames` (or, `--layout words`, each word's text before its frames)
is run through the model once. At every speech position the
model predicts the next frame from the true frames before it: channel 0 by the main head (argmax
over its codebook), channels 1..K-1 by the channel head (argmax each, independently: what greedy
generation does; `--channel_decode sample` / `mean` read each channel's distribution by a sample
or its rounded expected level instead). Rows:

  model, teacher-forced   those predictions, resynthesized and recognized (pocketsphinx)
  ... another sentence's text   the same, with the next manifest row's text as the prompt: a
                          model that reads its prompt predicts the true frames worse with it
  true frames, delayed    each frame replaced by the previous true frame: the same audio one
                          position late; a trivial predictor (no learning) that keeps the
                          structure of real speech
  free-running            (not run here) slm-eval's TTS loopback: the model's own frames as history

A model whose teacher-forced speech is unintelligible cannot speak by continuing its own output.
The columns say why: per-channel accuracy and level error against the truth (few errors or many),
the text control's (does the prediction depend on what it is asked to say), and, for dMel, the
mean level change between consecutive 20 ms frames and the spread of levels across mel bins
within a frame, beside the true frames' (smoothed spectra would show lower values than the truth's).
With several mel frames per position (dMel `stack`), the level error of each stacked frame is
printed too: how the prediction degrades with distance from the last frame heard. Read the
columns beside bench/dmel_error_structure.py's table (which errors speech survives).
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import sys

import numpy as np


def _pick(logits_TC, how: str, rng: np.random.Generator) -> np.ndarray:
  """Levels from per-channel logits [..., C]: argmax, a sample, or the rounded expected level."""
  import jax  # pylint: disable=import-outside-toplevel
  if how == "argmax":
    return np.asarray(logits_TC.argmax(-1))
  probs = np.asarray(jax.nn.softmax(logits_TC.astype("float32"), axis=-1), np.float64)
  if how == "mean":
    return np.rint(probs @ np.arange(probs.shape[-1])).astype(np.int32)
  cdf = np.cumsum(probs, axis=-1)
  u = rng.random(cdf.shape[:-1] + (1,))
  return np.minimum((cdf < u * cdf[..., -1:]).sum(-1), probs.shape[-1] - 1)


def _tts_sequence(session, text: str, frames_TK: np.ndarray, spans_W2: np.ndarray | None):
  """The training layout of a TTS example: whole (`[TTS] [TEXT] text [SPEECH] frames`) when
  `spans_W2` is None, else word-interleaved like the WordTTS template (each word's text just
  before its frames; word w of `text` speaks the frames of span w, the spans' words cycled when
  `text` has more words than the speech)."""
  from slm_jax.data.templates.sequence import SequenceBuilder  # pylint: disable=import-outside-toplevel
  v = session.vocab
  if spans_W2 is None:
    return (SequenceBuilder(v).special("[TTS]").special("[TEXT]")
            .text(session.encode_text(text), trained=False).special("[SPEECH]")
            .speech(frames_TK, trained=True).finish(train_eos=True))
  from slm_jax.data.templates.utterance import Utterance  # pylint: disable=import-outside-toplevel
  from slm_jax.data.templates.word_tts import WordTTS  # pylint: disable=import-outside-toplevel
  from slm_jax.inference.word_tts import word_ids  # pylint: disable=import-outside-toplevel
  words = word_ids(session, text)
  words = [words[w % len(words)] for w in range(len(spans_W2))]   # one text word per speech word
  utt = Utterance(np.concatenate(words).astype(np.int32),
                  np.asarray([len(w) for w in words], np.int32), frames_TK, spans_W2)
  return WordTTS().build(utt, None, v).finish(train_eos=True)


def _predict_next_frames(session, text: str, frames_TK: np.ndarray, how: str = "argmax",
                         rng: np.random.Generator | None = None,
                         spans_W2: np.ndarray | None = None) -> np.ndarray:
  """int32[T, K]: the model's prediction of each frame from the true ones before it (each
  channel's level by `how`: argmax, sample or mean), in the whole or word-interleaved layout
  (`_tts_sequence`)."""
  import jax.numpy as jnp  # pylint: disable=import-outside-toplevel
  from slm_jax.unified_vocab import MODALITY_SPEECH  # pylint: disable=import-outside-toplevel
  v, model = session.vocab, session.model
  seq = _tts_sequence(session, text, frames_TK, spans_W2)
  tokens_L = seq["tokens"].astype(np.int32)
  codes = seq["speech_codes"][None].astype(np.int32) if "speech_codes" in seq else None
  length = tokens_L.size
  hidden_1LD = model(tokens_L[None], np.ones((1, length), np.int32),
                     np.arange(length, dtype=np.int32)[None], codes)
  speech_T = np.flatnonzero(np.asarray(v.modality(tokens_L)) == MODALITY_SPEECH)
  h_TD = hidden_1LD[0, speech_T - 1]               # the state that predicts each frame
  logits = model.heads.logits(h_TD)
  rng = rng or np.random.default_rng(0)
  first = _pick(logits[:, v.speech_start:v.speech_start + v.speech_codebook_sizes[0]], how, rng)
  out = [first[:, None]]
  if v.num_channels > 1:   # as generation chooses them (frame by frame under sequential read-out)
    out.append(np.asarray(model.heads.choose_channels(
        h_TD, jnp.asarray(first), lambda logits, _: jnp.asarray(_pick(logits, how, rng)))))
  return np.concatenate(out, axis=1).astype(np.int32)


def main(argv=None) -> int:
  p = argparse.ArgumentParser(description=__doc__,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("--checkpoint", required=True, help="an inference checkpoint (slm-export)")
  p.add_argument("--manifest", required=True, help="JSONL rows with audio_path and text")
  p.add_argument("--num", type=int, default=12, help="sentences (the first N rows)")
  p.add_argument("--workers", type=int, default=2, help="pocketsphinx processes")
  p.add_argument("--layout", choices=("whole", "words"), default="whole",
                 help="the TTS layout the model was trained on: whole sentences, or each word's "
                 "text before its speech (the demo recipe, configs/tasks/demo_main.gin; needs the manifest's "
                 "word_starts / word_ends)")
  p.add_argument("--channel_decode", action="append", choices=("argmax", "sample", "mean"),
                 default=None, help="how the model's levels are read from its logits "
                 "(repeat for several rows; default argmax, what greedy generation does)")
  args = p.parse_args(argv)
  os.environ.setdefault("JAX_PLATFORMS", "cpu")
  from slm_jax.evaluation import recognizer  # pylint: disable=import-outside-toplevel
  from slm_jax.evaluation.error_rates import error_rates  # pylint: disable=import-outside-toplevel
  from slm_jax.inference.session import Session  # pylint: disable=import-outside-toplevel
  session = Session.load(args.checkpoint)
  rate = session.speech_tokenizer.sample_rate
  with open(args.manifest) as f:
    rows = [json.loads(line) for line in f if line.strip()][:args.num]
  modes = args.channel_decode or ["argmax"]
  names = [f"model/{m}" for m in modes] + ["other_text", "delayed"]
  refs, audio, stats = [], {n: [] for n in names}, {n: [] for n in names}
  truth_texture, by_frame = [], {n: [] for n in names}
  n_mels = getattr(getattr(session.speech_tokenizer, "mel", None), "n_mels", None)
  rng = np.random.default_rng(0)
  for row in rows:
    true_TK = session.encode_audio(row["audio_path"])
    spans = None
    if args.layout == "words":
      from slm_jax.data.tokenize import word_frame_spans  # pylint: disable=import-outside-toplevel
      spans = word_frame_spans(row["word_starts"], row["word_ends"],
                               session.speech_tokenizer.frame_rate, len(true_TK))
    guesses = {f"model/{m}": _predict_next_frames(session, row["text"], true_TK, m, rng, spans)
               for m in modes}
    other_text = rows[(len(refs) + 1) % len(rows)]["text"]
    guesses["other_text"] = _predict_next_frames(session, other_text, true_TK, modes[0], rng, spans)
    guesses["delayed"] = np.concatenate([true_TK[:1], true_TK[:-1]], axis=0)
    refs.append(row.get("orig_text", row["text"]))   # phone or pronunciation corpora
    for name, frames in guesses.items():
      audio[name].append((session.decode_speech(frames), rate))
      stats[name].append(((frames == true_TK).mean(), (frames[:, 0] == true_TK[:, 0]).mean(),
                          np.abs(frames - true_TK).mean()) + _texture(frames, n_mels))
      by_frame[name].append(_error_by_frame(frames, true_TK, n_mels))
    truth_texture.append(_texture(true_TK, n_mels))
  print(f"# {datetime.date.today()} {platform.node()} {os.cpu_count()} cpus; "
        f"{' '.join(sys.argv)}")
  print(f"{len(rows)} sentences of {args.manifest}, checkpoint {args.checkpoint}\n")
  print("| frames | loopback WER | CER | channel accuracy | channel 0 accuracy | mean |level error| "
        "| frame-to-frame change | spread across bins |")
  print("|---|---|---|---|---|---|---|---|")
  labels = {f"model/{m}": f"model, teacher-forced ({m} of each channel)" for m in modes}
  labels["other_text"] = f"model, teacher-forced ({modes[0]}), another sentence's text"
  labels["delayed"] = "true frames, delayed one position"
  for name in names:
    hyps = recognizer.transcribe_many(audio[name], workers=args.workers)
    rates = error_rates(refs, hyps)
    acc, acc0, err, change, spread = np.mean(stats[name], axis=0)
    print(f"| {labels[name]} | {100 * rates.wer:.1f}% | {100 * rates.cer:.1f}% | {100 * acc:.1f}% "
          f"| {100 * acc0:.1f}% | {err:.3f} | {change:.3f} | {spread:.3f} |")
    for ref, hyp in list(zip(refs, hyps))[:3]:
      print(f"|   {ref!r} -> {hyp!r} | | | | | | | |")
  change, spread = np.mean(truth_texture, axis=0)
  print(f"| (the true frames) | | | | | | {change:.3f} | {spread:.3f} |")
  if n_mels and session.vocab.num_channels > n_mels:
    print("\nmean |level error| by stacked frame within a position (1 = the frame right after the "
          "last one heard):\n")
    for name in names:
      errors = " / ".join(f"{e:.2f}" for e in np.mean(by_frame[name], axis=0))
      print(f"- {labels[name]}: {errors}")
  return 0


def _error_by_frame(frames_TK: np.ndarray, true_TK: np.ndarray, n_mels: int | None) -> np.ndarray:
  """float[stack]: mean |level error| of each stacked mel frame of a position (dMel with stack > 1;
  an empty array otherwise)."""
  if not n_mels or frames_TK.shape[1] % n_mels:
    return np.zeros([0])
  diff = np.abs(frames_TK.astype(np.float64) - true_TK).reshape(len(frames_TK), -1, n_mels)
  return diff.mean(axis=(0, 2))


def _texture(frames_TK: np.ndarray, n_mels: int | None) -> tuple[float, float]:
  """dMel frames [T, stack x n_mels] -> (mean |level change| between consecutive mel frames,
  mean standard deviation of levels across the mel bins of a frame); NaN for other tokenizers."""
  if not n_mels or frames_TK.shape[1] % n_mels:
    return float("nan"), float("nan")
  mel_FM = frames_TK.reshape(-1, n_mels).astype(np.float64)   # unstacked: one row per mel frame
  change = np.abs(np.diff(mel_FM, axis=0)).mean() if len(mel_FM) > 1 else float("nan")
  return float(change), float(mel_FM.std(axis=1).mean())


if __name__ == "__main__":
  sys.exit(main())
