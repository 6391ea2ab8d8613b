"""Continuous batching: many requests through the engine's slots, streamed as they decode.

Free slots take the next waiting request (prefill + insert) between `generate` calls, so a
finished row is refilled at once instead of waiting for the longest row of a static batch.
`on_tokens(index, tokens, codes, done)` receives each request's new tokens after every
`generate` call (the first one right after its prefill): text can be printed, and speech frames
turned into audio chunks, while the rest still decodes.
"""
from __future__ import annotations

import collections
import dataclasses
from typing import Any, Callable, Optional, Sequence

import numpy as np

from slm_jax.inference.engine import Engine

TokensCallback = Callable[[int, np.ndarray, np.ndarray, bool], None]


@dataclasses.dataclass(frozen=True)
class Request:
  """One prompt: unified ids int32[n] (+ extra speech channels int32[n, K-1] when K > 1)."""
  prompt_ids: np.ndarray
  prompt_codes: Optional[np.ndarray] = None
  mode: str = "any"
  max_new_tokens: int = 256
  seed: int = 0
  tag: Any = None


@dataclasses.dataclass
class Completion:
  request: Request
  tokens: np.ndarray              # int32[n] generated ids (a stop token included when one ended it)
  codes: np.ndarray               # int32[n, K-1]
  stopped: bool                   # ended by a stop token (else by its budget or the cache)


def run_requests(engine: Engine, requests: Sequence[Request],
                 on_tokens: Optional[TokensCallback] = None,
                 on_done: Optional[Callable[[int, Completion], None]] = None) -> list[Completion]:
  """Generates every request; returns their completions in request order."""
  waiting = collections.deque(range(len(requests)))
  slot_of_request: dict[int, int] = {}          # request index -> slot
  request_in_slot: dict[int, int] = {}          # slot -> request index
  tokens: dict[int, list] = {i: [] for i in range(len(requests))}
  codes: dict[int, list] = {i: [] for i in range(len(requests))}
  results: list[Optional[Completion]] = [None] * len(requests)
  state = engine.init_decode_state()
  k_extra = engine.num_extra

  def emit(index, new_tokens, new_codes, done):
    tokens[index] += list(new_tokens)
    codes[index] += list(new_codes)
    if on_tokens is not None and (len(new_tokens) or done):
      on_tokens(index, np.asarray(new_tokens, np.int32),
                np.asarray(new_codes, np.int32).reshape(len(new_tokens), k_extra), done)
    if done:
      toks = np.asarray(tokens[index], np.int32)
      stopped = bool(toks.size) and int(toks[-1]) in engine.stop_ids
      results[index] = Completion(requests[index], toks,
                                  np.asarray(codes[index], np.int32).reshape(toks.size, k_extra),
                                  stopped)
      if on_done is not None:
        on_done(index, results[index])

  while waiting or request_in_slot:
    for slot in range(engine.slots):             # refill free slots
      if slot in request_in_slot or not waiting:
        continue
      index = waiting.popleft()
      r = requests[index]
      prefix = engine.prefill(r.prompt_ids, r.prompt_codes, seed=r.seed, mode=r.mode,
                              max_new_tokens=r.max_new_tokens)
      first_done = not bool(prefix.active_B[0])
      emit(index, [int(prefix.token_B[0])], [np.asarray(prefix.codes_BK[0])], first_done)
      if not first_done:
        state = engine.insert(prefix, state, slot)
        slot_of_request[index] = slot
        request_in_slot[slot] = index
    if not request_in_slot:
      continue
    state, out = engine.generate(state)
    emitted_NB = np.asarray(out.emitted_NB)
    done_NB = np.asarray(out.done_NB)
    tokens_NB = np.asarray(out.tokens_NB)
    codes_NBK = np.asarray(out.codes_NBK)
    for slot, index in list(request_in_slot.items()):
      rows = emitted_NB[:, slot]
      done = bool(done_NB[:, slot].any())
      emit(index, tokens_NB[rows, slot], codes_NBK[rows, slot], done)
      if done:
        del request_in_slot[slot], slot_of_request[index]
  return results  # type: ignore[return-value]
