"""No-learning baselines: what an error rate is worth when the output ignores its input.

The deranged baseline scores the SAME hypotheses against the references of OTHER utterances
(a fixed derangement). A model whose transcripts depend on the audio scores much better against
its own references than against the deranged ones; a model that writes plausible sentences
regardless of the audio scores about the same on both. The empty-output baseline (WER = CER =
1.0) is the floor of a system that says nothing.
"""
from __future__ import annotations

from typing import Hashable, Optional, Sequence

import numpy as np

from slm_jax.data.transcript import normalize_transcript
from slm_jax.evaluation.error_rates import ErrorRates, error_rates


def derangement(keys: Sequence[Hashable]) -> Optional[np.ndarray]:
  """A fixed permutation `perm` with keys[perm[i]] != keys[i] for every i, or None (n < 2).

  Utterances sharing a key (the same sentence spoken by two voices) are never paired with each
  other: sorted by key, each takes the one `m` places later (m = the largest group), which lands
  in another group whenever m <= n / 2. Larger groups leave some pairs equal (unavoidable).
  """
  n = len(keys)
  if n < 2:
    return None
  order = sorted(range(n), key=lambda i: (str(keys[i]), i))
  counts: dict = {}
  for k in keys:
    counts[k] = counts.get(k, 0) + 1
  shift = max(counts.values())
  shift = shift if shift < n else 1
  perm = np.empty(n, np.int64)
  for j, i in enumerate(order):
    perm[i] = order[(j + shift) % n]
  return perm


def deranged_error_rates(references: Sequence[str],
                         hypotheses: Sequence[str]) -> Optional[ErrorRates]:
  """Error rates of each hypothesis against another utterance's reference (None for n < 2)."""
  perm = derangement([normalize_transcript(r) for r in references])
  if perm is None:
    return None
  return error_rates([references[j] for j in perm], list(hypotheses))


def baselines(references: Sequence[str], hypotheses: Sequence[str]) -> dict:
  """{"deranged_wer", "deranged_cer", "empty_wer", "empty_cer"} for a results table."""
  out = {"empty_wer": 1.0, "empty_cer": 1.0}
  deranged = deranged_error_rates(references, hypotheses)
  if deranged is not None:
    out.update(deranged_wer=deranged.wer, deranged_cer=deranged.cer)
  return out
