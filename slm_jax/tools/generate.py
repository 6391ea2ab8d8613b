"""slm-generate: transcribe, speak, continue or chat with a trained speech-text LM.

  slm-generate --checkpoint EXPORT --task asr --audio in.wav          # prints the transcript
  slm-generate --checkpoint EXPORT --task tts --text "hello there" --out out.wav
  slm-generate --checkpoint EXPORT --task tts --tts_mode words --text "hello there" --out out.wav
  slm-generate --checkpoint EXPORT --task continue --text "once upon a"   (or --audio a.wav)
  slm-generate --checkpoint EXPORT --task chat --text "Write down what was said." --audio a.wav
  slm-generate --workdir RUN [--step N] ...                           # a training run directly
  slm-generate --checkpoint EXPORT --batch_file requests.jsonl --out_dir outs/

--checkpoint is an inference checkpoint (`slm-export`); --workdir reads a training run's checkpoint
(exported to a temporary directory first). A batch file has one JSON object per line, e.g.
{"task": "asr", "audio": "a.wav"} or {"task": "tts", "text": "...", "out": "b.wav"}; requests run
through the engine's slots together (continuous batching) and results print as JSON lines.

--tts_mode words speaks the way a model trained on word-interleaved TTS (the tts_words template,
`make demo`'s recipe) was taught: each word's text is put in the prompt before its speech, and the
model speaks it until it ends the word (greedy; at most --max_positions_per_word positions a word,
--max_new_tokens in all). --tts_mode whole (the default) gives the whole text, then decodes speech.

Speech output goes through the speech tokenizer's decoder: dMel frames through Griffin-Lim;
k-means units through their centroids' mel frames and Griffin-Lim, which keeps the words but
sounds robotic (units keep no speaker or pitch detail). Audio input is resampled to the
tokenizer's rate when it has another one.

Exit codes: 0 done; 2 a known error (missing checkpoint, vocabulary mismatch, empty, corrupt or
unreadable audio, a prompt longer than --max_length), said in one line on stderr.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import resource
import sys

import numpy as np

from slm_jax.errors import SlmError
from slm_jax.tools import cli_errors

PROG = "slm-generate"
TASKS = ("asr", "tts", "continue", "chat")


class RequestError(SlmError, ValueError):
  """A request line or flags that do not make a request."""


def parse_args(argv=None) -> argparse.Namespace:
  p = argparse.ArgumentParser(prog=PROG, description=__doc__,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
  src = p.add_mutually_exclusive_group(required=True)
  src.add_argument("--checkpoint", help="an inference checkpoint directory (slm-export --out)")
  src.add_argument("--workdir", help="a training run directory (slm-train --workdir)")
  p.add_argument("--step", type=int, default=None, help="with --workdir: checkpoint step")
  p.add_argument("--task", choices=TASKS, default=None)
  p.add_argument("--audio", default=None, help="input speech (asr, continue, chat)")
  p.add_argument("--text", default=None, help="input text (tts, continue, chat instruction)")
  p.add_argument("--out", default=None, help="output wav for a speech answer")
  p.add_argument("--batch_file", default=None, help="JSON lines of requests (see above)")
  p.add_argument("--out_dir", default=None, help="with --batch_file: where speech answers go")
  p.add_argument("--max_new_tokens", type=int, default=256)
  p.add_argument("--max_length", type=int, default=1024, help="KV cache positions per slot")
  p.add_argument("--slots", type=int, default=4, help="requests decoded together")
  p.add_argument("--temperature", type=float, default=0.0, help="0 = greedy")
  p.add_argument("--top_k", type=int, default=0)
  p.add_argument("--top_p", type=float, default=1.0)
  p.add_argument("--seed", type=int, default=0)
  p.add_argument("--cache_dtype", choices=("float32", "bfloat16"), default=None)
  p.add_argument("--ignore_eos", action="store_true",
                 help="do not stop at EOS: every answer gets --max_new_tokens (benchmarks, tests)")
  p.add_argument("--tts_mode", choices=("whole", "words"), default="whole",
                 help="tts: whole (the text, then its speech) or words (each word's text injected "
                 "before its speech; for models trained on word-interleaved TTS)")
  p.add_argument("--max_positions_per_word", type=int, default=None,
                 help="with --tts_mode words: the most speech positions of one word (default 1.5 s)")
  p.add_argument("--stream", action="store_true",
                 help="one request: print text as it decodes, append audio to --out in chunks")
  return p.parse_args(argv)


def _requests_from_args(args) -> list[dict]:
  if args.batch_file:
    if not os.path.exists(args.batch_file):
      raise RequestError(f"--batch_file {args.batch_file!r} does not exist")
    out = []
    with open(args.batch_file) as f:
      for n, line in enumerate(f, 1):
        if not line.strip():
          continue
        try:
          req = json.loads(line)
        except json.JSONDecodeError as e:
          raise RequestError(f"{args.batch_file}:{n}: not JSON ({e})") from None
        if not isinstance(req, dict):
          raise RequestError(f"{args.batch_file}:{n}: expected an object like "
                             '{"task": "asr", "audio": "a.wav"}')
        out.append(req)
    if not out:
      raise RequestError(f"--batch_file {args.batch_file!r} has no requests")
    return out
  if args.task is None:
    raise RequestError("give --task (asr, tts, continue, chat) or --batch_file")
  return [{"task": args.task, "audio": args.audio, "text": args.text, "out": args.out}]


def build_prompt(session, req: dict, where: str):
  """A request dict -> (Prompt, output wav path or None)."""
  from slm_jax.inference import prompts  # pylint: disable=import-outside-toplevel
  task = req.get("task")
  if task not in TASKS:
    raise RequestError(f"{where}: unknown task {task!r}; use one of {TASKS}")
  vocab, audio, text = session.vocab, req.get("audio"), req.get("text")
  frames = session.encode_audio(audio) if audio else None
  if task == "asr":
    if frames is None:
      raise RequestError(f"{where}: asr needs --audio")
    prompt = prompts.asr(vocab, frames)
  elif task == "tts":
    if not text or not text.strip():
      raise RequestError(f"{where}: tts needs a non-empty --text")
    prompt = prompts.tts(vocab, session.encode_text(text))
  elif task == "continue":
    if (frames is None) == (not text):
      raise RequestError(f"{where}: continue needs exactly one of --text or --audio")
    prompt = (prompts.continue_speech(vocab, frames) if frames is not None
              else prompts.continue_text(vocab, session.encode_text(text)))
  else:
    if not text:
      raise RequestError(f"{where}: chat needs an instruction in --text")
    prompt = prompts.chat(vocab, session.encode_text(text), frames_TK=frames)
  return prompt, req.get("out")


def _word_tts_requests(requests: list[dict], args) -> list[int]:
  """Indices of the requests spoken word by word (--tts_mode words), checked."""
  if getattr(args, "tts_mode", "whole") != "words":
    return []
  picked = [i for i, r in enumerate(requests) if r.get("task") == "tts"]
  if picked and args.temperature > 0:
    raise RequestError("--tts_mode words decodes greedily; drop --temperature (or use "
                       "--tts_mode whole to sample)")
  if picked and getattr(args, "stream", False):
    raise RequestError("--tts_mode words does not stream; drop --stream")
  for i in picked:
    if not (requests[i].get("text") or "").strip():
      raise RequestError(f"request {i + 1}: tts needs a non-empty --text")
  return picked


def _speak_words(session, requests: list[dict], picked: list[int], args) -> dict[int, tuple]:
  """Word-interleaved TTS of the picked requests: index -> (frames int32[T, K], words)."""
  from slm_jax.inference import word_tts  # pylint: disable=import-outside-toplevel
  texts = [requests[i]["text"] for i in picked]
  frames = word_tts.synthesize_words(session, texts, max_total=args.max_new_tokens,
                                     max_positions_per_word=args.max_positions_per_word,
                                     batch_size=max(1, min(args.slots, len(texts))),
                                     progress=sys.stderr.isatty())
  return {i: (f, len(word_tts.word_ids(session, t))) for i, f, t in zip(picked, frames, texts)}


def run_generation(session, requests: list[dict], args, out=None) -> list[dict]:
  """Runs the requests through the engine (word-interleaved TTS requests through word_tts);
  returns (and prints) one result dict per request."""
  out = out or sys.stdout
  from slm_jax.inference import prompts  # pylint: disable=import-outside-toplevel
  from slm_jax.data import audio as audio_lib  # pylint: disable=import-outside-toplevel
  by_words = _word_tts_requests(requests, args)
  built = [(None, r.get("out")) if i in by_words else build_prompt(session, r, f"request {i + 1}")
           for i, r in enumerate(requests)]
  spoken = _speak_words(session, requests, by_words, args) if by_words else {}
  engine_built = [(i, b) for i, b in enumerate(built) if i not in spoken]
  completions = {}
  if engine_built:
    completions = _run_engine(session, engine_built, args, out)
  streamed_audio = completions.pop("streamed", None)
  printed = []
  for i, (_, wav_out) in enumerate(built):
    if i in spoken:     # stopped: every word ended before the answer's budget ran out
      text_ids, frames = np.zeros([0], np.int32), spoken[i][0]
      result = {"index": i, "task": "tts", "tts_mode": "words", "words": spoken[i][1],
                "new_tokens": int(len(frames)), "stopped": bool(len(frames) < args.max_new_tokens)}
    else:
      completion = completions[i]
      text_ids, frames = prompts.split_answer(session.vocab, completion.tokens, completion.codes)
      result = {"index": i, "task": requests[i].get("task"),
                "new_tokens": int(completion.tokens.size), "stopped": completion.stopped}
    if len(text_ids):
      result["text"] = session.decode_text(text_ids)
    if len(frames):
      result["speech_frames"] = int(len(frames))
      path = wav_out or (os.path.join(args.out_dir, f"{i:04d}.wav") if args.out_dir else None)
      if streamed_audio:
        result["audio"], result["seconds"] = streamed_audio
      elif path:
        audio = session.decode_speech(frames)
        audio_lib.write_audio(path, audio, session.speech_tokenizer.sample_rate)
        result["audio"] = path
        result["seconds"] = round(len(audio) / session.speech_tokenizer.sample_rate, 2)
    printed.append(result)
    if len(requests) == 1 and not args.batch_file:
      if "text" in result:
        streamed = getattr(args, "stream", False)      # streamed: the text is out, end its line
        print("" if streamed else result["text"], file=out)
      if "audio" in result:
        print(f"wrote {result['audio']} ({result['seconds']} s)", file=out)
      elif "speech_frames" in result and "text" not in result:
        print(f"{result['speech_frames']} speech frames generated; pass --out FILE.wav to hear them",
              file=out)
    else:
      print(json.dumps(result), file=out)
  return printed


def _run_engine(session, built: list[tuple[int, tuple]], args, out) -> dict:
  """Decodes (request index, (Prompt, wav path)) pairs with the engine: index -> Completion, and
  "streamed" -> (path, seconds) when --stream wrote the audio."""
  from slm_jax.inference import batching, sampling  # pylint: disable=import-outside-toplevel
  from slm_jax.unified_vocab import EOS_ID  # pylint: disable=import-outside-toplevel
  engine = session.engine(
      slots=max(1, min(args.slots, len(built))), max_length=args.max_length,
      sampling_config=sampling.SamplingConfig(args.temperature, args.top_k, args.top_p),
      cache_dtype=args.cache_dtype, stop_ids=() if getattr(args, "ignore_eos", False) else (EOS_ID,))
  print(f"{PROG}: {engine.memory_report()}", file=sys.stderr)
  reqs = [batching.Request(p.ids, p.codes, p.mode, args.max_new_tokens, args.seed + i, tag=i)
          for i, (p, _) in built]
  for r in reqs:     # check every prompt fits before decoding any
    if r.prompt_ids.size >= args.max_length:
      raise RequestError(f"request {r.tag + 1}: the prompt has {r.prompt_ids.size} tokens but "
                         f"--max_length is {args.max_length}; raise --max_length or shorten it")
  progress = _progress(len(reqs))
  stream = (_Streamer(session, built[0][1][1], out) if getattr(args, "stream", False) else None)
  results = batching.run_requests(engine, reqs, on_tokens=stream and stream.callback,
                                  on_done=lambda i, c: progress.update(1))
  progress.close()
  completions = {i: c for (i, _), c in zip(built, results)}
  if stream:
    completions["streamed"] = stream.finish()
  return completions


class _Streamer:
  """--stream: prints text as it decodes and appends audio chunks to the output wav."""

  def __init__(self, session, wav_out, out):
    from slm_jax.inference.session import AnswerStream  # pylint: disable=import-outside-toplevel
    self.session, self.wav_out, self.out = session, wav_out, out
    self.partial = wav_out + ".partial.wav" if wav_out else None
    self.file, self.samples = None, 0
    self.callback = AnswerStream(session, on_text=self._text,
                                 on_audio=self._audio if wav_out else None)

  def _text(self, index, delta):
    print(delta, end="", file=self.out, flush=True)

  def _audio(self, index, samples):
    import soundfile as sf  # pylint: disable=import-outside-toplevel
    if self.file is None:
      self.file = sf.SoundFile(self.partial, "w", samplerate=self.session.speech_tokenizer.sample_rate,
                               channels=1, subtype="PCM_16")
    self.file.write(np.clip(samples, -1.0, 1.0))
    self.file.flush()
    self.samples += len(samples)

  def finish(self):
    """(path, seconds) of the streamed wav, or None when no audio was streamed."""
    if self.file is None:
      return None
    self.file.close()
    os.replace(self.partial, self.wav_out)
    return self.wav_out, round(self.samples / self.session.speech_tokenizer.sample_rate, 2)


def _progress(total: int):
  from tqdm import tqdm  # pylint: disable=import-outside-toplevel
  return tqdm(total=total, desc="generating", unit="req", disable=total < 2 or not sys.stderr.isatty())


def main(argv=None) -> int:
  args = parse_args(argv)
  logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
  from absl import logging as absl_logging  # pylint: disable=import-outside-toplevel
  absl_logging.set_verbosity(absl_logging.ERROR)
  from slm_jax.inference.session import Session  # pylint: disable=import-outside-toplevel
  requests = _requests_from_args(args)
  if args.checkpoint:
    cm = contextlib.nullcontext(Session.load(args.checkpoint))
  else:
    if not os.path.isdir(args.workdir):
      raise RequestError(f"--workdir {args.workdir!r} does not exist")
    cm = Session.from_workdir(args.workdir, step=args.step)
  if args.stream and len(requests) > 1:
    raise RequestError("--stream takes one request, not a --batch_file")
  with cm as session:
    run_generation(session, requests, args)
  peak_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024   # Linux: KiB
  print(f"{PROG}: peak host memory {peak_mib:.0f} MiB", file=sys.stderr)
  return 0


def run() -> None:
  sys.exit(cli_errors.run_main(PROG, main))


if __name__ == "__main__":
  run()
