"""espeak-ng synthesis with word timings, through libespeak-ng's C API (ctypes).

espeak-ng reports a WORD event (text offset, audio position) as it speaks each word, so word
starts come from the synthesizer itself. A word ends where its audio does: the last loud
10 ms frame before the next word starts (or before the end of the audio).
Audio comes at the voice's rate (22050 Hz) and is resampled to 16 kHz.
"""
import ctypes
import ctypes.util
import functools
import math
import os
import pickle
import re

import numpy as np
from scipy import signal

from slm_jax.data.corpus.errors import missing_package

_AUDIO_OUTPUT_SYNCHRONOUS = 2
_EVENT_WORD, _EVENT_MSG_TERMINATED = 1, 6
_PARAM_RATE, _PARAM_PITCH = 1, 3
_CHARS_UTF8 = 1
_EE_OK = 0
_WORD = re.compile(r"[A-Za-z](?:[A-Za-z']*[A-Za-z])?")  # as normalize_transcript splits words


class _EventId(ctypes.Union):
  _fields_ = [("number", ctypes.c_int), ("name", ctypes.c_char_p), ("string", ctypes.c_char * 8)]


class _Event(ctypes.Structure):
  _fields_ = [("type", ctypes.c_int), ("unique_identifier", ctypes.c_uint),
              ("text_position", ctypes.c_int), ("length", ctypes.c_int),
              ("audio_position", ctypes.c_int), ("sample", ctypes.c_int),
              ("user_data", ctypes.c_void_p), ("id", _EventId)]


_CALLBACK = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int,
                             ctypes.POINTER(_Event))


def load_library() -> ctypes.CDLL:
  name = ctypes.util.find_library("espeak-ng") or "libespeak-ng.so.1"
  try:
    return ctypes.CDLL(name)
  except OSError as e:
    raise missing_package("the espeak-ng library (libespeak-ng.so.1)", "espeak-ng") from e


class _Engine:
  """One initialized libespeak-ng per process (the library keeps global state)."""

  def __init__(self):
    self.lib = load_library()
    self.rate = self.lib.espeak_Initialize(_AUDIO_OUTPUT_SYNCHRONOUS, 0, None, 0)
    if self.rate <= 0:
      raise missing_package("espeak-ng data (espeak_Initialize failed)", "espeak-ng")
    self._chunks: list[np.ndarray] = []
    self._words: list[tuple[int, int]] = []  # (text_position, audio sample)
    self._callback = _CALLBACK(self._on_audio)  # keep a reference: C holds the pointer
    self.lib.espeak_SetSynthCallback(self._callback)
    self.lib.espeak_SetVoiceByName.argtypes = [ctypes.c_char_p]
    self.lib.espeak_Synth.argtypes = [ctypes.c_char_p, ctypes.c_size_t, ctypes.c_uint,
                                      ctypes.c_int, ctypes.c_uint, ctypes.c_uint,
                                      ctypes.c_void_p, ctypes.c_void_p]

  def _on_audio(self, wav, num_samples, events):
    if num_samples > 0:
      self._chunks.append(np.ctypeslib.as_array(wav, shape=(num_samples,)).copy())
    k = 0
    while events[k].type != 0:
      if events[k].type == _EVENT_WORD:
        self._words.append((events[k].text_position, events[k].audio_position))
      k += 1
    return 0

  def speak(self, text: str, voice: str, rate: int, pitch: int):
    if self.lib.espeak_SetVoiceByName(voice.encode()) != _EE_OK:
      raise ValueError(f"espeak-ng has no voice {voice!r} (see `espeak-ng --voices=en`)")
    self.lib.espeak_SetParameter(_PARAM_RATE, int(rate), 0)
    self.lib.espeak_SetParameter(_PARAM_PITCH, int(pitch), 0)
    self._chunks, self._words = [], []
    data = text.encode("utf-8")
    status = self.lib.espeak_Synth(data, len(data) + 1, 0, 0, 0, _CHARS_UTF8, None, None)
    if status != _EE_OK:
      raise RuntimeError(f"espeak_Synth failed ({status}) on {text!r}")
    self.lib.espeak_Synchronize()
    audio = np.concatenate(self._chunks) if self._chunks else np.zeros([0], np.int16)
    return audio.astype(np.int16), list(self._words)


@functools.lru_cache(maxsize=1)
def engine() -> _Engine:
  return _Engine()


def _speak_fresh(text: str, voice: str, rate: int, pitch: int):
  """Speaks in a forked child of the freshly initialized engine.

  libespeak-ng carries waveform state from one utterance to the next (the same call gives a few
  samples more or less each time), so every utterance starts from the same fresh state: the
  corpus is then the same whatever order the workers synthesize in.
  """
  eng = engine()
  read_fd, write_fd = os.pipe()
  pid = os.fork()
  if pid == 0:  # child: speak, send the result, exit without Python clean-up
    code = 0
    try:
      os.close(read_fd)
      try:
        result = eng.speak(text, voice, rate, pitch)
      except Exception as e:  # pylint: disable=broad-except
        result = e
      data = pickle.dumps(result)
      with os.fdopen(write_fd, "wb") as f:
        f.write(data)
    except BaseException:  # pylint: disable=broad-except
      code = 1
    os._exit(code)  # pylint: disable=protected-access
  os.close(write_fd)
  with os.fdopen(read_fd, "rb") as f:
    data = f.read()
  _, status = os.waitpid(pid, 0)
  if not data or status != 0:
    raise RuntimeError(f"espeak-ng child process failed (status {status}) on {text!r}")
  result = pickle.loads(data)
  if isinstance(result, Exception):
    raise result
  return result


def _word_ends(audio_16k: np.ndarray, starts: list[float], frame_s: float = 0.01,
               rel_threshold: float = 0.05) -> list[float]:
  """End of each word: the end of its last frame louder than `rel_threshold` x the peak RMS."""
  hop = int(16000 * frame_s)
  n = len(audio_16k) // hop
  frames = audio_16k[:n * hop].astype(np.float32).reshape(n, hop)
  loud = np.sqrt((frames ** 2).mean(axis=1)) > rel_threshold * max(
      1.0, float(np.sqrt((frames ** 2).mean(axis=1)).max()))
  duration = len(audio_16k) / 16000
  ends = []
  for w, start in enumerate(starts):
    limit = starts[w + 1] if w + 1 < len(starts) else duration
    lo, hi = int(math.floor(start / frame_s)), min(n, int(math.floor(limit / frame_s)))
    idx = np.nonzero(loud[lo:hi])[0]
    end = (lo + idx[-1] + 1) * frame_s if len(idx) else limit
    ends.append(float(min(max(end, start + frame_s), limit)))
  return ends


def _event_words(spans: list[tuple[int, int]], events: list[tuple[int, int]]) -> dict[int, float]:
  """{word index: start seconds} for the words espeak-ng announced.

  A WORD event's text position (1-based) points at its word or at the space before it
  (before the first word: anywhere in the leading punctuation).
  """
  out: dict[int, float] = {}
  for pos, ms in events:
    c = pos - 1
    w = next((k for k, (a, b) in enumerate(spans) if c < b), None)
    if w is not None and w not in out and (spans[w][0] - c <= 1 or w == 0):
      out[w] = ms / 1000.0
  return out


def synthesize(text: str, words: list[str], voice: str = "en-us", rate: int = 160,
               pitch: int = 50):
  """Speaks `text` with espeak-ng (`voice` like "en-us+f3", words/minute `rate`, `pitch` 0-99).

  espeak-ng speaks some unstressed words together with a neighbour ("do not", "in the") and
  announces only the first; such a group's time is shared among its words by letter count.

  Returns:
    (audio int16[P] at 16 kHz, word_starts[W], word_ends[W]) for the transcript `words`.
  Raises:
    ValueError: the text's words are not the transcript's, or the first word got no event.
  """
  spans = [m.span() for m in _WORD.finditer(text)]
  if [text[a:b].lower().replace("'", "") for a, b in spans] != [w.replace("'", "")
                                                                  for w in words]:
    raise ValueError(f"the words of {text!r} are not the transcript {words}")
  audio, events = _speak_fresh(text, voice, rate, pitch)
  g = math.gcd(16000, engine().rate)
  audio_16k = signal.resample_poly(audio.astype(np.float32), 16000 // g, engine().rate // g)
  audio_16k = np.clip(np.round(audio_16k), -32768, 32767).astype(np.int16)
  announced = _event_words(spans, events)
  if 0 not in announced:
    raise ValueError(f"espeak-ng gave no word event for the first word of {text!r}")
  anchors = sorted(announced)
  group_ends = _word_ends(audio_16k, [announced[w] for w in anchors])
  starts, ends = [0.0] * len(words), [0.0] * len(words)
  for k, (a, t0, t1) in enumerate(zip(anchors, [announced[w] for w in anchors], group_ends)):
    b = anchors[k + 1] if k + 1 < len(anchors) else len(words)
    weights = np.cumsum([0] + [len(words[w]) + 1 for w in range(a, b)], dtype=np.float64)
    cuts = t0 + (t1 - t0) * weights / weights[-1]
    for w in range(a, b):
      starts[w], ends[w] = float(cuts[w - a]), float(cuts[w - a + 1])
  return audio_16k, starts, ends
