"""Runs `jax.export` artifacts (slm_jax/export/jax_export.py) without slm_jax's model code.

    runner = ExportedRunner("out/", slots=4)
    results = runner.generate_all([prompt_ids, ...], max_new_tokens=64)   # [(tokens, codes), ...]

or step by step like the engine: `init_state()`, `prefill(...)`, `insert(...)`, `generate(state)`.
Needs only jax, numpy, safetensors and ml_dtypes (and the manifest): this module imports nothing
of slm_jax but its error base class, so it also serves as the recipe for another host program.
Sampling settings, stop ids and max_length were compiled in at export (see the manifest).
"""
from __future__ import annotations

import json
import os
from typing import Optional, Sequence

import jax
import jax.numpy as jnp
import ml_dtypes  # noqa: F401  pylint: disable=unused-import  (numpy "bfloat16" for safetensors)
import numpy as np
from safetensors.numpy import load_file

from slm_jax.errors import SlmError

MANIFEST = "manifest.json"
FORMAT = "slm_jax.jax_export/1"


class ExportedArtifactError(SlmError, ValueError):
  """The artifact directory is missing, incomplete or of another format; or a prompt does not fit."""


def _read_manifest(directory: str) -> dict:
  path = os.path.join(directory, MANIFEST)
  if not os.path.exists(path):
    raise ExportedArtifactError(f"no {MANIFEST} in {directory}: not a jax.export artifact directory "
                                "(write one with slm_jax.export.jax_export.export_engine)")
  with open(path) as f:
    manifest = json.load(f)
  if manifest.get("format") != FORMAT:
    raise ExportedArtifactError(f"{path} has format {manifest.get('format')!r}; this loader reads "
                                f"{FORMAT!r}")
  return manifest


def _deserialize(directory: str, filename: str):
  path = os.path.join(directory, filename)
  if not os.path.exists(path):
    raise ExportedArtifactError(f"{path} is missing (the manifest names it)")
  with open(path, "rb") as f:
    return jax.export.deserialize(bytearray(f.read()))


class ExportedRunner:
  """Prefill / insert / generate from deserialized artifacts, over `slots` decode slots."""

  def __init__(self, directory: str, slots: Optional[int] = None):
    self.manifest = m = _read_manifest(directory)
    platform = jax.default_backend()
    platform = "cuda" if platform == "gpu" else platform
    if platform not in m["platforms"]:
      raise ExportedArtifactError(f"the artifacts were lowered for {m['platforms']}, not for this "
                                  f"machine's {platform!r}; export again with that platform")
    self.slots = int(slots or m["slots"])
    self.max_length = int(m["max_length"])
    self.buckets = tuple(int(b) for b in m["buckets"])
    self.num_extra = int(m["num_extra_channels"])
    self.stop_ids = tuple(m["stop_ids"])
    self.modes = dict(m["modes"])
    self.vocab_size = int(m["vocab_size"])
    self.pad_id = int(m["pad_id"])
    params = load_file(os.path.join(directory, m["params_file"]))
    missing = sorted(set(m["params"]) - set(params))
    if missing:
      raise ExportedArtifactError(f"{m['params_file']} lacks parameters the manifest names: "
                                  f"{missing[:5]}")
    self.params = {n: jnp.asarray(params[n]) for n in m["params"]}
    exported = {name: _deserialize(directory, f) for name, f in m["files"].items()}
    self._prefill = jax.jit(exported["prefill"].call)
    self._insert = jax.jit(exported["insert"].call, donate_argnums=(1,))
    self._generate = jax.jit(exported["generate"].call, donate_argnums=(1,))

  # -- state ----------------------------------------------------------------------------------
  def init_state(self) -> dict:
    """An empty decode state for `self.slots` slots (zeros; every slot inactive)."""
    state = {}
    for name, spec in self.manifest["state"].items():
      shape = tuple(self.slots if d == "b" else d for d in spec["shape"])
      state[name] = jnp.zeros(shape, spec["dtype"])
    return state

  # -- requests -------------------------------------------------------------------------------
  def _modality(self, ids: np.ndarray) -> int:
    marks = self.manifest["modality_ids"]
    for t in ids[::-1]:
      if t == marks["text_marker"]:
        return self.modes["text"]
      if t == marks["speech_marker"]:
        return self.modes["speech"]
    return 0

  def prefill(self, prompt_ids, prompt_codes=None, *, seed: int = 0, mode: str = "any",
              max_new_tokens: int = 256) -> dict:
    """One prompt -> its one-row state; its first new token is `state['token_B'][0]`."""
    ids = np.asarray(prompt_ids, np.int32).reshape(-1)
    n = ids.size
    if not 0 < n < self.max_length:
      raise ExportedArtifactError(f"the prompt has {n} tokens; it needs 1 to {self.max_length - 1} "
                                  f"(the cache holds {self.max_length} positions)")
    if ids.min() <= self.pad_id or ids.max() >= self.vocab_size:
      raise ExportedArtifactError(f"prompt ids must be in [1, {self.vocab_size}); got min "
                                  f"{ids.min()}, max {ids.max()}")
    if mode not in self.modes:
      raise ExportedArtifactError(f"unknown mode {mode!r}; use one of {sorted(self.modes)}")
    bucket = next(b for b in self.buckets if b >= n)
    tokens = np.zeros((1, bucket), np.int32)
    tokens[0, :n] = ids
    codes = np.zeros((1, bucket, self.num_extra), np.int32)
    if self.num_extra and prompt_codes is not None:
      codes[0, :n] = np.asarray(prompt_codes, np.int32).reshape(n, self.num_extra)
    key = jax.random.key_data(jax.random.key(seed, impl=self.manifest["prng_impl"]))
    return self._prefill(self.params, tokens, codes, np.int32(n), key,
                         np.int32(self.modes[mode]), np.int32(self._modality(ids)),
                         np.int32(max_new_tokens))

  def insert(self, prefix: dict, state: dict, slot: int) -> dict:
    if not 0 <= slot < self.slots:
      raise ValueError(f"slot {slot} out of range [0, {self.slots})")
    return self._insert(prefix, state, np.int32(slot))

  def generate(self, state: dict) -> tuple[dict, dict]:
    """`steps_per_call` decode steps: (state, {tokens_NB, codes_NBK, emitted_NB, done_NB})."""
    return self._generate(self.params, state)

  def generate_all(self, prompts: Sequence, *, max_new_tokens: int = 256, mode: str = "any",
                   seeds: Optional[Sequence[int]] = None, prompt_codes: Optional[Sequence] = None):
    """Every prompt through the slots (a free slot takes the next prompt between calls).

    Returns [(tokens int32[n], codes int32[n, K-1]), ...] in prompt order.
    """
    seeds = list(seeds) if seeds is not None else list(range(len(prompts)))
    out = [([], []) for _ in prompts]
    waiting = list(range(len(prompts)))[::-1]
    in_slot: dict[int, int] = {}
    state = self.init_state()
    while waiting or in_slot:
      for slot in range(self.slots):
        if slot in in_slot or not waiting:
          continue
        i = waiting.pop()
        prefix = self.prefill(prompts[i], None if prompt_codes is None else prompt_codes[i],
                              seed=seeds[i], mode=mode, max_new_tokens=max_new_tokens)
        out[i][0].append(int(prefix["token_B"][0]))
        out[i][1].append(np.asarray(prefix["codes_BK"][0]))
        if bool(prefix["active_B"][0]):
          state = self.insert(prefix, state, slot)
          in_slot[slot] = i
      if not in_slot:
        continue
      state, step = self.generate(state)
      emitted, done = np.asarray(step["emitted_NB"]), np.asarray(step["done_NB"])
      tokens, codes = np.asarray(step["tokens_NB"]), np.asarray(step["codes_NBK"])
      for slot, i in list(in_slot.items()):
        for n in np.nonzero(emitted[:, slot])[0]:
          out[i][0].append(int(tokens[n, slot]))
          out[i][1].append(codes[n, slot])
        if done[:, slot].any():
          del in_slot[slot]
    return [(np.asarray(t, np.int32), np.asarray(c, np.int32).reshape(len(t), self.num_extra))
            for t, c in out]
