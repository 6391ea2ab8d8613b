"""ASR evaluation: greedy transcripts of a manifest's audio, WER / CER overall and per speaker,
beside the no-learning baselines (`baselines.py`) and a few example transcripts.

    result = evaluate_asr(session, read_manifest("corpus/manifest_test.jsonl"), slots=8)
    result["cer"], result["baseline"]["deranged_cer"], result["per_speaker"]["flite-slt"]["cer"]
"""
from __future__ import annotations

import time
from typing import Sequence

from slm_jax.evaluation import baselines, generation
from slm_jax.evaluation.error_rates import error_rates
from slm_jax.evaluation.eval_sets import EvalUtterance


def score_transcripts(references: Sequence[str], hypotheses: Sequence[str],
                      speakers: Sequence[str] = ()) -> dict:
  """WER / CER, baselines, and the same per speaker (when speakers are given)."""
  rates = error_rates(references, hypotheses)
  out = {"utterances": len(references), "wer": rates.wer, "cer": rates.cer,
         "words": rates.to_dict()["words"], "chars": rates.to_dict()["chars"],
         "baseline": baselines.baselines(references, hypotheses)}
  if speakers and len(set(speakers)) > 1:
    per = {}
    for spk in sorted(set(speakers)):
      idx = [i for i, s in enumerate(speakers) if s == spk]
      refs, hyps = [references[i] for i in idx], [hypotheses[i] for i in idx]
      r = error_rates(refs, hyps)
      per[spk] = {"utterances": len(idx), "wer": r.wer, "cer": r.cer,
                  "baseline": baselines.baselines(refs, hyps)}
    out["per_speaker"] = per
  return out


def evaluate_asr(session, utterances: Sequence[EvalUtterance], *, max_new_tokens: int = 96,
                 slots: int = 8, num_examples: int = 5, engine=None, progress: bool = True,
                 decoder: str = "attention", frames: Sequence | None = None,
                 ctc_weight: float = 0.5, beam_size: int = 4,
                 pre_beam: int | None = None) -> dict:
  """Transcribes every utterance and scores it (see the module docstring).

  decoder: "attention" (the model writes the transcript token by token, greedily), "ctc" (best
  path of the auxiliary CTC head over the speech frames, inference/ctc_decoding.py) or "joint"
  (beam search over the decoder's tokens scored by `ctc_weight` * CTC prefix score +
  (1 - `ctc_weight`) * decoder log-probability, `beam_size` hypotheses; a character CTC head
  scores each hypothesis's `pre_beam` best decoder candidates, inference/joint_decoding.py).
  frames: the utterances' speech frames when already encoded (else read and encoded here).
  """
  start = time.perf_counter()
  if frames is None:
    frames = [session.encode_audio(u.audio_path) for u in utterances]
  if decoder == "ctc":
    from slm_jax.inference.ctc_decoding import ctc_transcribe  # pylint: disable=import-outside-toplevel
    hyps = ctc_transcribe(session, frames, batch_size=slots)
  elif decoder == "joint":
    from slm_jax.inference.joint_decoding import joint_transcribe  # pylint: disable=import-outside-toplevel
    hyps = joint_transcribe(session, frames, ctc_weight=ctc_weight, beam_size=beam_size,
                            max_new_tokens=max_new_tokens, batch_size=slots, pre_beam=pre_beam)
  elif decoder == "attention":
    hyps = generation.transcribe(session, frames, max_new_tokens=max_new_tokens, slots=slots,
                                 engine=engine, progress=progress)
  else:
    raise ValueError(f"decoder must be 'attention', 'ctc' or 'joint', got {decoder!r}")
  refs = [u.text for u in utterances]
  out = score_transcripts(refs, hyps, [u.speaker for u in utterances])
  out["examples"] = [{"id": u.id, "speaker": u.speaker, "reference": u.text, "hypothesis": h}
                     for u, h in list(zip(utterances, hyps))[:num_examples]]
  out["hypotheses"] = {u.id: h for u, h in zip(utterances, hyps)}
  out["decoder"] = decoder
  if decoder == "joint":
    out["ctc_weight"], out["beam_size"], out["pre_beam"] = ctc_weight, beam_size, pre_beam
  out["seconds"] = round(time.perf_counter() - start, 2)
  return out
