"""The normal form of a transcript: what corpora store and what word error rates compare.

Lowercase, punctuation removed (apostrophes inside words kept), single spaces, so "Don't panic!"
and "don't panic" are the same transcript.
"""
import re

_PUNCT = re.compile(r"[,.;:!?\"()-]")


def normalize_transcript(sentence: str) -> str:
  """Lowercase, punctuation removed (apostrophes inside words kept), single spaces.

  >>> normalize_transcript("Don't panic!  'Tis   FINE.")
  "don't panic tis fine"
  """
  text = _PUNCT.sub(" ", sentence.lower())
  words = [w.strip("'") for w in text.split()]
  return " ".join(w for w in words if w)
