"""Word timings from a synthesizer's phone segments.

A synthesizer gives the phones it spoke with their end times (contextual pronunciation) and,
separately, each word's phones in isolation. A minimum-edit-distance alignment of the two phone
sequences labels every spoken phone with its word; a word spans its first to last phone.
"""
from typing import Sequence

SILENCE_PHONES = frozenset({"pau", "sil", "_", "h#"})


class AlignmentError(ValueError):
  """The phones could not be assigned to the words (a word got no phone)."""


def align_labels(ref: Sequence[str], hyp: Sequence[str]) -> list[int | None]:
  """For each hyp symbol, the index of the ref symbol it aligns to (None for an insertion).

  Levenshtein alignment (unit costs; ties prefer a match/substitution), so labels are monotonic.
  """
  n, m = len(ref), len(hyp)
  cost = [[i + j if i == 0 or j == 0 else 0 for j in range(m + 1)] for i in range(n + 1)]
  for i in range(1, n + 1):
    prev, row = cost[i - 1], cost[i]
    for j in range(1, m + 1):
      row[j] = min(prev[j - 1] + (ref[i - 1] != hyp[j - 1]), prev[j] + 1, row[j - 1] + 1)
  labels: list[int | None] = [None] * m
  i, j = n, m
  while i > 0 and j > 0:
    if cost[i][j] == cost[i - 1][j - 1] + (ref[i - 1] != hyp[j - 1]):
      labels[j - 1] = i - 1
      i, j = i - 1, j - 1
    elif cost[i][j] == cost[i][j - 1] + 1:
      j -= 1
    else:
      i -= 1
  return labels


def word_times(word_phones: Sequence[Sequence[str]],
               segments: Sequence[tuple[str, float]]) -> tuple[list[float], list[float]]:
  """Word start/end times (seconds) from per-word phones and spoken `(phone, end_time)` segments.

  Args:
    word_phones: W lists of phones, each word's pronunciation (in isolation).
    segments: the spoken segments in order, each `(phone, end_time)`; silences included.
  Returns:
    (starts[W], ends[W]), monotonic: starts[w] < ends[w] <= starts[w + 1].
  """
  ref, ref_word = [], []
  for w, phones in enumerate(word_phones):
    ref.extend(phones)
    ref_word.extend([w] * len(phones))
  spoken = [(k, p) for k, (p, _) in enumerate(segments) if p not in SILENCE_PHONES]
  labels = align_labels(ref, [p for _, p in spoken])
  words = [None if lab is None else ref_word[lab] for lab in labels]
  # Inserted phones join the preceding word (or the following one at the start).
  for k in range(len(words)):
    if words[k] is None and k > 0:
      words[k] = words[k - 1]
  for k in range(len(words) - 1, -1, -1):
    if words[k] is None and k + 1 < len(words):
      words[k] = words[k + 1]
  num_words = len(word_phones)
  first: list[int | None] = [None] * num_words
  last: list[int | None] = [None] * num_words
  for (seg_index, _), w in zip(spoken, words):
    if w is None:
      continue
    if first[w] is None:
      first[w] = seg_index
    last[w] = seg_index
  missing = [w for w in range(num_words) if first[w] is None]
  if missing:
    raise AlignmentError(f"words {missing} got no spoken phone (of {num_words} words)")
  starts = [segments[f - 1][1] if f > 0 else 0.0 for f in first]
  ends = [segments[l][1] for l in last]
  return [float(s) for s in starts], [float(e) for e in ends]
