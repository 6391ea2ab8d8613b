"""TTS loopback evaluation: text -> the model's speech -> audio -> an offline recognizer -> WER.

For each sentence the model generates speech greedily, in one of two modes: "whole" (the TTS
prompt with the whole text, answers constrained to speech; `generation.synthesize`) or "words"
(word-interleaved TTS: each word's text injected before its speech as the model ends the previous
word; `inference/word_tts.py`, for models trained with the WordTTS template). The session's
speech tokenizer turns the frames into audio (written to `out_dir`), and
the recognizer (`recognizer.py`, pocketsphinx) transcribes it. Beside the loopback WER / CER:

  baseline      the loopback hypotheses scored against other sentences (`baselines.py`): speech
                that does not depend on the text scores the same on both
  resynthesis   when the sentences come with audio: the tokenizer's round trip of that audio
                (`resynthesis.round_trip`), the ceiling of any model using this tokenizer
  original      the recognizer on the original audio (its own error on this speech)
"""
from __future__ import annotations

import os
import time
from typing import Callable, Optional, Sequence

import numpy as np

from slm_jax.data import audio as audio_lib
from slm_jax.evaluation import baselines, generation, recognizer, resynthesis
from slm_jax.evaluation.error_rates import error_rates
from slm_jax.evaluation.eval_sets import EvalUtterance
from slm_jax.errors import SlmError

Transcribe = Callable[[np.ndarray, int], str]


def default_recognizer() -> Optional[Transcribe]:
  """pocketsphinx's `transcribe`, or None when it is not installed."""
  from slm_jax.evaluation.recognizer import (  # pylint: disable=import-outside-toplevel
      PocketsphinxRecognizer, RecognizerUnavailableError)
  try:
    return PocketsphinxRecognizer().transcribe
  except RecognizerUnavailableError:
    return None


TTS_MODES = ("whole", "words")


class TtsModeError(SlmError, ValueError):
  """An unknown TTS generation mode."""


SKIP_MESSAGE = ("pocketsphinx is not installed (pip install -e '.[asr]'); the wavs are written "
                "but not transcribed")


def _rates(refs, hyps) -> dict:
  r = error_rates(refs, hyps)
  return {"wer": r.wer, "cer": r.cer}


def evaluate_tts(session, utterances: Sequence[EvalUtterance], out_dir: Optional[str], *,
                 transcribe: Optional[Transcribe] = None, slots: int = 8,
                 max_new_tokens: Optional[int] = None, seconds_per_word: float = 0.45,
                 num_examples: int = 5, engine=None, progress: bool = True,
                 recognizer_workers: Optional[int] = None, mode: str = "whole",
                 max_positions_per_word: Optional[int] = None) -> dict:
  """Loopback WER / CER of the model's speech for `utterances` (see the module docstring).

  transcribe(audio, sample_rate) -> text, called in this process; None: pocketsphinx in
  `recognizer_workers` processes (None: one per core, `recognizer.default_workers`), which also
  turn the frames into audio (Griffin-Lim) and make the round trips; when it is missing the
  result says so under "skipped" (the wavs are still written). max_new_tokens: a fixed budget of
  speech frames; None: `seconds_per_word` per word plus 1 s (`generation.speech_budget`). mode: "whole" or
  "words" (see the module docstring; the budget is then the most frames per sentence, and
  `max_positions_per_word` caps each word, None: word_tts's default).
  """
  if mode not in TTS_MODES:
    raise TtsModeError(f"unknown TTS mode {mode!r}; use one of {', '.join(TTS_MODES)}")
  start = time.perf_counter()
  texts = [u.text for u in utterances]
  budgets = (max_new_tokens if max_new_tokens else
             [generation.speech_budget(session, t, seconds_per_word) for t in texts])
  if mode == "words":
    from slm_jax.inference.word_tts import synthesize_words  # pylint: disable=import-outside-toplevel
    frames = synthesize_words(session, texts, max_positions_per_word=max_positions_per_word,
                              max_total=budgets, batch_size=slots, progress=progress)
  else:
    frames = generation.synthesize(session, texts, max_new_tokens=budgets, slots=slots,
                                   engine=engine, progress=progress)
  generated = time.perf_counter()
  tok = session.speech_tokenizer
  spoken = [i for i, f in enumerate(frames) if len(f)]
  if spoken and not tok.can_decode:
    session.decode_speech(frames[spoken[0]])    # raises the session's clear error
  recognize = transcribe is not None or default_recognizer() is not None
  # Everything to make and recognize, gathered first so Griffin-Lim and pocketsphinx run in
  # several processes: the model's answers, then per utterance with audio its original and the
  # tokenizer's round trip.
  jobs = [recognizer.Synthesized(tok.decode, (frames[i],), tok.sample_rate) for i in spoken]
  with_audio = [i for i, u in enumerate(utterances) if u.audio_path] if recognize else []
  for i in with_audio:
    audio, rate = audio_lib.read_audio(utterances[i].audio_path)
    jobs.append((audio, rate))
    if tok.can_decode:
      jobs.append(recognizer.Synthesized(resynthesis.round_trip, (tok, audio, rate),
                                         tok.sample_rate))
  if recognize:
    workers = recognizer.default_workers() if recognizer_workers is None else recognizer_workers
    results = iter(recognizer.recognize(jobs, workers, transcribe))
  else:   # the wavs alone
    results = iter(recognizer.Recognized("", job.make(*job.args)) for job in jobs)
  audios = [np.zeros([0], np.float32)] * len(frames)
  hyps = [""] * len(frames)
  for i in spoken:
    hyps[i], audios[i] = next(results)
  files = []
  if out_dir:
    os.makedirs(out_dir, exist_ok=True)
    for u, a in zip(utterances, audios):
      path = os.path.join(out_dir, f"{u.id}.wav")
      if a.size:
        audio_lib.write_audio(path, a, tok.sample_rate)
        files.append(path)
  out = {"utterances": len(utterances), "mode": mode, "out_dir": out_dir, "files": files,
         "seconds_of_speech": round(sum(a.size for a in audios) / tok.sample_rate, 2),
         "empty_answers": len(frames) - len(spoken),
         "generation_seconds": round(generated - start, 2)}
  if not recognize:
    out["skipped"] = SKIP_MESSAGE
    out["seconds"] = round(time.perf_counter() - start, 2)
    return out
  heard = (r.text for r in results)
  out.update(_rates(texts, hyps))
  out["baseline"] = baselines.baselines(texts, hyps)
  if with_audio:
    refs = [texts[i] for i in with_audio]
    originals, resynth = [], []
    for _ in with_audio:
      originals.append(next(heard))
      if tok.can_decode:
        resynth.append(next(heard))
    out["original"] = _rates(refs, originals)
    if resynth:
      out["resynthesis"] = _rates(refs, resynth)
  out["examples"] = [{"id": u.id, "reference": u.text, "hypothesis": h,
                      "wav": os.path.join(out_dir, f"{u.id}.wav") if out_dir else None}
                     for u, h in list(zip(utterances, hyps))[:num_examples]]
  out["seconds"] = round(time.perf_counter() - start, 2)
  return out
