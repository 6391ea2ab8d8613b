"""Evaluation results as one JSON file, TensorBoard scalars and a printed table.

The results dict (what `slm-eval` writes) has one section per kind of evaluation, each keyed by
the evaluated set's name:

    {"checkpoint": ..., "step": N,
     "asr":      {name: {"wer", "cer", "baseline": {...}, "per_speaker": {...}, "examples": [...]}},
     "tts":      {name: {"wer", "cer", "baseline": {...}, "resynthesis": {...}, "original": {...}}},
     "loss":     {task: {"loss/ce", "loss/text_ce", "loss/speech_ce", "perplexity", ...}},
     "pairwise": {set: {condition: {"accuracy", "pairs", ...}}},
     "seconds":  {part: wall seconds}}     # e.g. "asr/test", "asr/test/ctc", "tts", "loss"

`scalars(results)` flattens the numbers into `section/name/metric` keys (the TensorBoard tags,
under `eval/`).
"""
from __future__ import annotations

import json
from typing import Optional

import numpy as np

from slm_jax.atomic_write import atomic_write

SECTIONS = ("loss", "asr", "tts", "pairwise")


def _flatten(prefix: str, obj, out: dict) -> None:
  if isinstance(obj, dict):
    for k, v in obj.items():
      if k in ("examples", "hypotheses", "files", "skipped"):
        continue
      _flatten(f"{prefix}/{k}" if prefix else str(k), v, out)
  elif isinstance(obj, (bool, np.bool_)):
    return
  elif isinstance(obj, (int, float, np.integer, np.floating)) and np.isfinite(obj):
    out[prefix] = float(obj)


def scalars(results: dict) -> dict[str, float]:
  """Every finite number of the evaluation sections as {"asr/test/cer": 0.31, ...}."""
  out: dict[str, float] = {}
  for section in SECTIONS:
    if section in results:
      _flatten(section, results[section], out)
  return out


def write_json(results: dict, path: str) -> None:
  atomic_write(path, json.dumps(results, indent=1, sort_keys=True, default=_jsonable) + "\n")


def _jsonable(x):
  if isinstance(x, (np.integer,)):
    return int(x)
  if isinstance(x, (np.floating,)):
    return float(x)
  if isinstance(x, np.ndarray):
    return x.tolist()
  raise TypeError(f"not JSON serializable: {type(x).__name__}")


def write_tensorboard(results: dict, logdir: str, step: int, prefix: str = "eval/") -> None:
  """The scalars of `results` at `step` (train/metrics.py's MetricWriter)."""
  from slm_jax.train.metrics import MetricWriter  # pylint: disable=import-outside-toplevel
  writer = MetricWriter(logdir)
  try:
    writer.write(step, scalars(results), prefix=prefix)
  finally:
    writer.close()


def _num(m: dict, key: str, width: int, digits: int) -> str:
  return f"{m[key]:{width}.{digits}f}" if key in m else "-".rjust(width)


def _pct(x: Optional[float]) -> str:
  return "-" if x is None else f"{100 * x:.1f}%"


def format_table(results: dict) -> str:
  """A human-readable summary of the results dict."""
  lines = []
  loss = results.get("loss") or {}
  if loss:
    lines.append("Loss (held-out)            ce     text_ce  speech_ce  ppl     tokens")
    for task, m in loss.items():
      lines.append(f"  {task:<24} {_num(m, 'loss/ce', 6, 3)}  {_num(m, 'loss/text_ce', 7, 3)}  "
                   f"{_num(m, 'loss/speech_ce', 9, 3)}  {_num(m, 'perplexity', 7, 1)}  "
                   f"{int(m.get('tokens/weight', 0))}")
  asr = results.get("asr") or {}
  if asr:
    lines.append("ASR                        utts   WER      CER    | deranged WER  CER  "
                 "| empty CER")
    for name, r in asr.items():
      lines += _asr_rows(name, r)
      for ex in r.get("examples", [])[:3]:
        lines.append(f"    ref: {ex['reference']}")
        lines.append(f"    hyp: {ex['hypothesis']}")
  tts = results.get("tts") or {}
  if tts:
    lines.append("TTS loopback               utts   WER      CER    | deranged WER  | "
                 "resynthesis WER | original WER")
    for name, r in tts.items():
      if "skipped" in r:
        lines.append(f"  {name:<24} skipped: {r['skipped']}")
        continue
      b = r.get("baseline", {})
      lines.append(f"  {name:<24} {r['utterances']:5d}  {_pct(r['wer']):>7}  {_pct(r['cer']):>6} | "
                   f"{_pct(b.get('deranged_wer')):>12}  | "
                   f"{_pct(r.get('resynthesis', {}).get('wer')):>15} | "
                   f"{_pct(r.get('original', {}).get('wer')):>12}")
      if r.get("out_dir"):
        lines.append(f"    wavs: {r['out_dir']}")
  pairwise = results.get("pairwise") or {}
  if pairwise:
    lines.append("Pairwise (accuracy; chance 50%)  " + "  ".join(f"{c:>14}" for c in _CONDITIONS))
    for name, by_cond in pairwise.items():
      cells = [(_pct(by_cond[c]["accuracy"]) + f" ({by_cond[c]['pairs']})") if c in by_cond
               else "-" for c in _CONDITIONS]
      lines.append(f"  {name:<31}" + "  ".join(f"{c:>14}" for c in cells))
  return "\n".join(lines)


_CONDITIONS = ("speech", "text", "text_to_speech", "speech_to_text")


def _asr_rows(name: str, r: dict) -> list[str]:
  b = r.get("baseline", {})
  rows = [f"  {name:<24} {r['utterances']:5d}  {_pct(r['wer']):>7}  {_pct(r['cer']):>6} | "
          f"{_pct(b.get('deranged_wer')):>12} {_pct(b.get('deranged_cer')):>6} | "
          f"{_pct(b.get('empty_cer')):>8}"]
  for spk, s in (r.get("per_speaker") or {}).items():
    sb = s.get("baseline", {})
    rows.append(f"    {spk:<22} {s['utterances']:5d}  {_pct(s['wer']):>7}  {_pct(s['cer']):>6} | "
                f"{_pct(sb.get('deranged_wer')):>12} {_pct(sb.get('deranged_cer')):>6} |")
  return rows
