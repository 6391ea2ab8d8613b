"""Greedy generation of many prompts through the slot engine, for the evaluations.

    texts = transcribe(session, frames_list, slots=8, max_new_tokens=96)   # ASR
    frames = synthesize(session, texts, slots=8, max_new_tokens=[250, ...]) # TTS, frames [T, K]

Prompts are the training templates' prefixes (`inference/prompts.py`); answers are constrained
to their modality (ASR: text, TTS: speech) and decoded greedily, so results are deterministic.
An engine can be passed in and is reused (its compiled functions too); its parameters may be
swapped between calls (`engine.params = ...`), which is how training-time evaluations avoid
recompiling at every evaluation.
"""
from __future__ import annotations

import sys
from typing import Optional, Sequence, Union

import numpy as np

from slm_jax.inference import batching, prompts
from slm_jax.inference.sampling import SamplingConfig


def engine_for(session, prompt_lengths: Sequence[int], max_new_tokens: int, slots: int):
  """A greedy engine whose cache holds the longest prompt and its answer."""
  longest = max(prompt_lengths) + max_new_tokens + 1
  max_length = max(64, -(-longest // 64) * 64)
  return session.engine(slots=max(1, min(slots, len(prompt_lengths))), max_length=max_length,
                        sampling_config=SamplingConfig(temperature=0.0))


def run_prompts(session, built: Sequence[prompts.Prompt], max_new_tokens: Union[int, Sequence[int]],
                *, slots: int = 8, engine=None, desc: str = "generating", progress: bool = True):
  """Completions (request order) of greedy generation for the prompts."""
  budgets = ([int(max_new_tokens)] * len(built) if np.isscalar(max_new_tokens)
             else [int(m) for m in max_new_tokens])
  if engine is None:
    engine = engine_for(session, [p.ids.size for p in built], max(budgets), slots)
  room = engine.max_length - 1
  reqs = [batching.Request(p.ids, p.codes, p.mode, max(1, min(m, room - p.ids.size)), seed=0)
          for p, m in zip(built, budgets)]
  too_long = [i for i, p in enumerate(built) if p.ids.size >= room]
  if too_long:
    from slm_jax.inference.engine import PromptError  # pylint: disable=import-outside-toplevel
    raise PromptError(f"prompt {too_long[0]} has {built[too_long[0]].ids.size} tokens; the engine "
                      f"holds {engine.max_length} positions")
  from tqdm import tqdm  # pylint: disable=import-outside-toplevel
  bar = tqdm(total=len(reqs), desc=desc, unit="utt", file=sys.stderr, leave=False,
             disable=(not progress) or None)
  try:
    return batching.run_requests(engine, reqs, on_done=lambda i, c: bar.update(1))
  finally:
    bar.close()


def transcribe(session, frames_list: Sequence[np.ndarray], *, max_new_tokens: int = 96,
               slots: int = 8, engine=None, progress: bool = True) -> list[str]:
  """Greedy ASR transcripts of speech frames [T, K] (one string per utterance)."""
  built = [prompts.asr(session.vocab, f) for f in frames_list]
  completions = run_prompts(session, built, max_new_tokens, slots=slots, engine=engine,
                            desc="asr", progress=progress)
  out = []
  for c in completions:
    text_ids, _ = prompts.split_answer(session.vocab, c.tokens, c.codes)
    out.append(session.decode_text(text_ids) if len(text_ids) else "")
  return out


def synthesize(session, texts: Sequence[str], *, max_new_tokens: Union[int, Sequence[int]],
               slots: int = 8, engine=None, progress: bool = True) -> list[np.ndarray]:
  """Greedy TTS: speech frames int32[T, K] for each text (T may be 0)."""
  built = [prompts.tts(session.vocab, session.encode_text(t)) for t in texts]
  completions = run_prompts(session, built, max_new_tokens, slots=slots, engine=engine,
                            desc="tts", progress=progress)
  return [prompts.split_answer(session.vocab, c.tokens, c.codes)[1] for c in completions]


def speech_budget(session, text: str, seconds_per_word: float = 0.45,
                  extra_seconds: float = 1.0, cap: Optional[int] = None) -> int:
  """New-token budget of a TTS answer: frames of `seconds_per_word` per word plus a margin.
  The defaults cover every utterance of the demo's test split (flite: 0.36 s per word on
  average, at most 0.45 w + 0.8 s); a model that has not learned to end its answer runs to it."""
  words = max(1, len(text.split()))
  frames = int(np.ceil(session.speech_tokenizer.frame_rate * (seconds_per_word * words +
                                                               extra_seconds)))
  return min(frames, cap) if cap else frames
