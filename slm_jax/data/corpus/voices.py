"""Synthetic speakers of the demo corpus: flite voices and espeak-ng voice/rate/pitch variants.

A voice is written as a spec string: `flite:slt`, or `espeak:en-us+f3:150:60`
(espeak-ng voice, words per minute, pitch 0-99), optionally with `@weight` (default 1).
"""
import dataclasses

import numpy as np

from slm_jax.errors import SlmError


class VoiceSpecError(SlmError, ValueError):
  """A voice spec string that does not name a known synthesizer voice."""


@dataclasses.dataclass(frozen=True)
class Voice:
  engine: str  # "flite" | "espeak"
  name: str
  rate: int = 0  # espeak only: words per minute
  pitch: int = 0  # espeak only: 0-99
  weight: float = 1.0  # relative chance of being picked for a sentence

  @property
  def speaker(self) -> str:
    """Speaker name stored with each utterance, e.g. "flite-slt", "espeak-en-us+f3-r150-p60"."""
    if self.engine == "flite":
      return f"flite-{self.name}"
    return f"espeak-{self.name}-r{self.rate}-p{self.pitch}"

  @property
  def tag(self) -> str:
    """The speaker as used in utterance ids and file names."""
    return self.speaker.replace("+", "_")

  @property
  def spec(self) -> str:
    """The spec string parse_voice reads back (without the weight)."""
    if self.engine == "flite":
      return f"flite:{self.name}"
    return f"espeak:{self.name}:{self.rate}:{self.pitch}"

  def synthesize(self, text: str, words: list[str], pronunciations=None):
    """(audio int16[P] at 16 kHz, word_starts[W], word_ends[W]). `pronunciations`: flite only,
    each word's phones when already read (`flite.batch_pronunciations`)."""
    if self.engine == "flite":
      from slm_jax.data.corpus import flite  # pylint: disable=import-outside-toplevel
      return flite.synthesize(text, words, self.name, pronunciations)
    from slm_jax.data.corpus import espeak  # pylint: disable=import-outside-toplevel
    return espeak.synthesize(text, words, self.name, self.rate, self.pitch)


def parse_voice(spec: str) -> Voice:
  """`flite:slt[@w]` or `espeak:VOICE:RATE:PITCH[@w]` -> Voice."""
  body, _, weight = spec.partition("@")
  parts = body.split(":")
  try:
    w = float(weight) if weight else 1.0
    if parts[0] == "flite" and len(parts) == 2:
      from slm_jax.data.corpus.flite import FLITE_VOICES  # pylint: disable=import-outside-toplevel
      if parts[1] not in FLITE_VOICES:
        raise ValueError(f"flite voice must be one of {FLITE_VOICES} (16 kHz)")
      return Voice("flite", parts[1], weight=w)
    if parts[0] == "espeak" and len(parts) == 4:
      return Voice("espeak", parts[1], int(parts[2]), int(parts[3]), weight=w)
  except ValueError as e:
    raise VoiceSpecError(f"bad voice spec {spec!r}: {e}") from e
  raise VoiceSpecError(f"bad voice spec {spec!r}: use `flite:slt` or `espeak:en-us+f3:150:60` "
                   "(optionally `@weight`)")


# flite carries ~3/4 of the utterances (offline ASR understands it: loopback evaluation);
# espeak-ng adds accent, rate and pitch variety.
DEFAULT_VOICES = (
    "flite:slt@3", "flite:awb@3", "flite:rms@3", "flite:kal16@3",
    "espeak:en-us:160:50", "espeak:en-us+f3:140:70", "espeak:en+m3:175:40",
    "espeak:en-us+f4:190:60",
)


def pick_voices(voices: list[Voice], k: int, rng: np.random.Generator) -> list[Voice]:
  """k distinct voices, drawn by weight."""
  if k > len(voices):
    raise ValueError(f"voices_per_sentence={k} but only {len(voices)} voices are configured")
  p = np.asarray([v.weight for v in voices], np.float64)
  idx = rng.choice(len(voices), size=k, replace=False, p=p / p.sum())
  return [voices[i] for i in sorted(idx)]
