"""Evaluations that run inside training, every `train.periodic_eval_every` steps (gin).

    import slm_jax.evaluation.periodic
    train.periodic_evals = [@asr_eval_hook(), @pairwise_eval_hook()]
    train.periodic_eval_every = 100
    asr_eval_hook.manifest = '/data/demo_corpus/manifest_test.jsonl'
    asr_eval_hook.speakers = ['flite']
    pairwise_eval_hook.pairwise_dir = '/data/demo_corpus/pairwise'
    eval_tokenizers.text_vocab = @demo_text_vocab()          # any text vocabulary factory
    eval_tokenizers.speech_tokenizer = @demo_speech_tokenizer()

A hook is `hook(model, vocab, step) -> {name: float}`: the train loop passes the live model (the
step's parameters) and the run's UnifiedVocab, and writes the scalars to TensorBoard under
`eval/` (e.g. `eval/asr/test/cer`, `eval/pairwise/words/speech/accuracy`) and into the
returned result's "periodic_eval" list. Each hook reads its inputs and tokenizes them once, and
keeps its compiled engine / scorer across calls, swapping in the new parameters.
"""
from __future__ import annotations

import logging
import time
from typing import Callable, Optional, Sequence

import gin
from flax import nnx

from slm_jax.configuration import ConfigError
# Imported here, not inside the hooks: gin evaluates the hooks after the config is locked, and
# these modules register configurables (e.g. the sampling config) when first imported.
from slm_jax.evaluation import asr_eval, eval_sets, generation, pairwise, tts_eval
from slm_jax.evaluation.likelihood import LikelihoodScorer
from slm_jax.inference import prompts
from slm_jax.inference.session import Session, check_tokenizers

Hook = Callable[[object, object, int], dict]


@gin.configurable
def eval_tokenizers(text_vocab=None, speech_tokenizer=None) -> tuple:
  """The tokenizers the hooks encode and decode with (bind factories: `@demo_text_vocab()`)."""
  if text_vocab is None or speech_tokenizer is None:
    raise ConfigError("periodic evaluations need tokenizers: bind eval_tokenizers.text_vocab "
                      "(e.g. @demo_text_vocab() or @get_text_vocabulary()) and "
                      "eval_tokenizers.speech_tokenizer (e.g. @demo_speech_tokenizer())")
  return text_vocab, speech_tokenizer


def check_eval_tokenizers(vocab) -> None:
  """Raises VocabMismatchError unless the hooks' tokenizers (`eval_tokenizers`) match the run's
  vocabulary: the train loop calls it before its first step, so a wrong tokenizer fails the run at
  once instead of at its first periodic evaluation."""
  text, speech = eval_tokenizers()
  check_tokenizers(vocab, text, speech, "the periodic evaluations' tokenizers (eval_tokenizers)")


def session_of(model, vocab):
  """A Session over a live model with the gin-bound tokenizers."""
  text, speech = eval_tokenizers()
  if model.cfg.vocab != vocab:
    raise ConfigError("the model's vocabulary differs from the run's")
  return Session.from_model(model, text, speech, directory="the training run")


def _params(model):
  return nnx.split(model)[1]


@gin.configurable
def asr_eval_hook(manifest: str = gin.REQUIRED, name: str = "test", max_examples: int = 32,
                  speakers: Optional[Sequence[str]] = None, max_new_tokens: int = 64,
                  slots: int = 8, joint_ctc_weight: Optional[float] = None,
                  joint_beam_size: int = 4) -> Hook:
  """CER / WER (and the deranged baseline) of greedy transcripts of a manifest's first
  `max_examples` utterances (optionally only speakers containing one of `speakers`).
  With a CTC head: the head's transcripts too, and with `joint_ctc_weight` set, joint
  CTC/attention beam search's (`asr/<name>/joint_cer`; a few greedy decodes' time)."""
  cache: dict = {}

  def hook(model, vocab, step):
    session = session_of(model, vocab)
    if "frames" not in cache:
      cache["utts"] = eval_sets.read_manifest(manifest, max_examples=max_examples,
                                              speakers=speakers)
      cache["frames"] = [session.encode_audio(u.audio_path) for u in cache["utts"]]
    if "engine" not in cache:
      lengths = [prompts.asr(vocab, f).ids.size for f in cache["frames"]]
      cache["engine"] = generation.engine_for(session, lengths, max_new_tokens, slots)
    else:
      cache["engine"].params = _params(model)
    hyps = generation.transcribe(session, cache["frames"], max_new_tokens=max_new_tokens,
                                 engine=cache["engine"], progress=False)
    refs = [u.text for u in cache["utts"]]
    r = asr_eval.score_transcripts(refs, hyps)
    out = {f"asr/{name}/cer": r["cer"], f"asr/{name}/wer": r["wer"],
           f"asr/{name}/deranged_cer": r["baseline"].get("deranged_cer", float("nan"))}
    if getattr(model.cfg, "asr_ctc", False):      # the CTC head's transcripts as well
      from slm_jax.inference.ctc_decoding import ctc_transcribe  # pylint: disable=import-outside-toplevel
      c = asr_eval.score_transcripts(refs, ctc_transcribe(session, cache["frames"], batch_size=slots))
      out.update({f"asr/{name}/ctc_cer": c["cer"], f"asr/{name}/ctc_wer": c["wer"]})
      from slm_jax.inference import joint_decoding  # pylint: disable=import-outside-toplevel
      if joint_ctc_weight is not None and model.cfg.architecture == "shared":
        joint_transcribe = joint_decoding.joint_transcribe
        j = asr_eval.score_transcripts(refs, joint_transcribe(
            session, cache["frames"], ctc_weight=joint_ctc_weight, beam_size=joint_beam_size,
            max_new_tokens=max_new_tokens, batch_size=slots))
        out.update({f"asr/{name}/joint_cer": j["cer"], f"asr/{name}/joint_wer": j["wer"]})
    return out

  return hook


@gin.configurable
def pairwise_eval_hook(pairwise_dir: str = gin.REQUIRED, max_pairs: int = 32,
                       normalize: bool = False, conditions: Sequence[str] = (
                           "speech", "text", "text_to_speech", "speech_to_text")) -> Hook:
  """Pairwise accuracy per set and condition on the first `max_pairs` pairs of each set."""
  cache: dict = {}

  def hook(model, vocab, step):
    if "sets" not in cache:
      session = session_of(model, vocab)
      audio: dict = {}
      cache["sets"] = {name: [pairwise.tokenize_pair(session, p, audio) for p in pairs]
                       for name, pairs in pairwise.load_pair_sets(pairwise_dir, max_pairs).items()}
      cache["scorer"] = LikelihoodScorer(model)
    else:
      cache["scorer"].params = _params(model)
    out = {}
    for name, pairs in cache["sets"].items():
      res = pairwise.score_tokenized(model, pairs, conditions=conditions, normalize=normalize,
                                     scorer=cache["scorer"])
      out.update({f"pairwise/{name}/{c}/accuracy": r["accuracy"] for c, r in res.items()})
    return out

  return hook


@gin.configurable
def tts_eval_hook(texts: str = gin.REQUIRED, name: str = "tts", max_examples: int = 8,
                  slots: int = 8) -> Hook:
  """Loopback WER / CER of the model's speech for the first sentences of a text file or
  manifest (nothing when pocketsphinx is not installed)."""
  cache: dict = {}

  def hook(model, vocab, step):
    if "utts" not in cache:
      read = eval_sets.read_manifest if texts.endswith(".jsonl") else eval_sets.read_sentences
      cache["utts"] = [eval_sets.EvalUtterance(u.id, u.text, None)
                       for u in read(texts, max_examples=max_examples)]
      cache["transcribe"] = tts_eval.default_recognizer()
      if cache["transcribe"] is None:
        logging.warning("tts_eval_hook: %s", tts_eval.SKIP_MESSAGE)
    if cache["transcribe"] is None:
      return {}
    session = session_of(model, vocab)
    if "engine" not in cache:
      lengths = [prompts.tts(vocab, session.encode_text(u.text)).ids.size for u in cache["utts"]]
      budget = max(generation.speech_budget(session, u.text) for u in cache["utts"])
      cache["engine"] = generation.engine_for(session, lengths, budget, slots)
    else:
      cache["engine"].params = _params(model)
    r = tts_eval.evaluate_tts(session, cache["utts"], None, transcribe=cache["transcribe"],
                              engine=cache["engine"], progress=False)
    return {f"tts/{name}/wer": r["wer"], f"tts/{name}/cer": r["cer"],
            f"tts/{name}/deranged_wer": r["baseline"].get("deranged_wer", float("nan"))}

  return hook


def run_hooks(hooks: Sequence[Hook], model, vocab, step: int) -> dict:
  """Every hook's scalars at `step`, merged, plus `periodic/seconds` (their wall time)."""
  start = time.perf_counter()
  out: dict = {}
  for hook in hooks:
    out.update({k: float(v) for k, v in hook(model, vocab, step).items()})
  out["periodic/seconds"] = time.perf_counter() - start
  return out
