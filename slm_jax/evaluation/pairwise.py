"""Spoken-LM pairwise benchmarks (sWUGGY, sBLIMP, spoken / topic StoryCloze style).

Each pair holds a positive and a negative ending (a real word and a non-word, a sentence and its
scrambled words, a story's true and a random ending), optionally after a shared prompt. The model
scores each ending by its log-likelihood given the prompt, summed or length-normalized (mean per
scored token); accuracy is the fraction of pairs whose positive scores higher (ties count 1/2;
chance is 50%). Four conditions, laid out like the training templates
(`slm_jax/data/templates`), only the ending's positions (and its EOS) scored:

    speech           [BOS] [SPEECH_LM] prompt-speech ending-speech [EOS]
    text             [BOS] [TEXT_LM] prompt-text ending-text [EOS]
    text_to_speech   [BOS] [INTERLEAVE] [TEXT] prompt-text [SPEECH] ending-speech [EOS]
    speech_to_text   [BOS] [INTERLEAVE] [SPEECH] prompt-speech [TEXT] ending-text [EOS]

A pair takes part in the conditions its content allows (the cross-modal ones need a prompt).
Sets on disk: `pairwise_sets.py` (built offline from the demo corpus, one jsonl per set) and
`pairwise_official.py` (the ZeroSpeech 2021 and spoken StoryCloze layouts); `load_pair_sets`
reads any of them.
"""
from __future__ import annotations

import dataclasses
import json
import os
import sys
from typing import Optional, Sequence

import numpy as np

from slm_jax.data.templates.sequence import SequenceBuilder
from slm_jax.data.transcript import normalize_transcript
from slm_jax.evaluation.eval_sets import EvalInputError
from slm_jax.evaluation.likelihood import LikelihoodScorer, ScoredSequence
from slm_jax.unified_vocab import UnifiedVocab

CONDITIONS = ("speech", "text", "text_to_speech", "speech_to_text")


@dataclasses.dataclass(frozen=True)
class Side:
  """One piece of content in one or both modalities (an audio path, absolute)."""
  text: str = ""
  audio: Optional[str] = None


@dataclasses.dataclass(frozen=True)
class Pair:
  id: str
  positive: Side
  negative: Side
  prompt: Optional[Side] = None


@dataclasses.dataclass(frozen=True)
class Tokens:
  """A side tokenized: text ids (text vocabulary) and/or speech frames [T, K]."""
  text_ids: Optional[np.ndarray] = None
  frames: Optional[np.ndarray] = None


@dataclasses.dataclass(frozen=True)
class TokenizedPair:
  id: str
  positive: Tokens
  negative: Tokens
  prompt: Optional[Tokens] = None


def _has(x) -> bool:
  return x is not None and len(x) > 0


def condition_sequence(vocab: UnifiedVocab, condition: str, ending: Tokens,
                       prompt: Optional[Tokens] = None,
                       include_eos: bool = True) -> Optional[ScoredSequence]:
  """The scored sequence of one ending under `condition`, or None when the content lacks it."""
  seq = SequenceBuilder(vocab)
  if condition == "speech":
    if not _has(ending.frames) or (prompt is not None and not _has(prompt.frames)):
      return None
    seq.special("[SPEECH_LM]")
    if prompt is not None:
      seq.speech(prompt.frames, trained=False)
    seq.speech(ending.frames, trained=True)
  elif condition == "text":
    if not _has(ending.text_ids) or (prompt is not None and not _has(prompt.text_ids)):
      return None
    seq.special("[TEXT_LM]")
    if prompt is not None:
      seq.text(prompt.text_ids, trained=False)
    seq.text(ending.text_ids, trained=True)
  elif condition == "text_to_speech":
    if prompt is None or not _has(prompt.text_ids) or not _has(ending.frames):
      return None
    seq.special("[INTERLEAVE]").special("[TEXT]").text(prompt.text_ids, trained=False)
    seq.special("[SPEECH]").speech(ending.frames, trained=True)
  elif condition == "speech_to_text":
    if prompt is None or not _has(prompt.frames) or not _has(ending.text_ids):
      return None
    seq.special("[INTERLEAVE]").special("[SPEECH]").speech(prompt.frames, trained=False)
    seq.special("[TEXT]").text(ending.text_ids, trained=True)
  else:
    raise ValueError(f"unknown condition {condition!r}; use one of {CONDITIONS}")
  out = seq.finish(train_eos=include_eos)
  return ScoredSequence(out["tokens"], out.get("speech_codes"), out["loss_mask"] > 0)


def score_tokenized(model, pairs: Sequence[TokenizedPair], *,
                    conditions: Sequence[str] = CONDITIONS, normalize: bool = False,
                    include_eos: bool = True, batch_size: int = 16,
                    scorer: Optional[LikelihoodScorer] = None, progress: bool = False) -> dict:
  """{condition: {"accuracy", "pairs", "ties", "mean_margin"}} for the conditions some pair has.

  normalize: score = mean log-likelihood per scored token instead of the sum. mean_margin is
  the mean of score(positive) - score(negative).
  """
  vocab = model.cfg.vocab
  scorer = scorer or LikelihoodScorer(model, batch_size)
  seqs, where = [], []          # where: (condition, pair index, 0 positive / 1 negative)
  for cond in conditions:
    for i, p in enumerate(pairs):
      pos = condition_sequence(vocab, cond, p.positive, p.prompt, include_eos)
      neg = condition_sequence(vocab, cond, p.negative, p.prompt, include_eos)
      if pos is None or neg is None:
        continue
      seqs += [pos, neg]
      where += [(cond, i, 0), (cond, i, 1)]
  bar = None
  if progress:
    from tqdm import tqdm  # pylint: disable=import-outside-toplevel
    bar = tqdm(total=len(seqs), desc="pairwise", unit="seq", file=sys.stderr, leave=False,
               disable=None)
  try:
    sums = scorer.score(seqs, progress=bar)
  finally:
    if bar is not None:
      bar.close()
  scores: dict[str, dict[int, list]] = {}
  for (cond, i, side), (total, count) in zip(where, sums):
    value = total / max(count, 1) if normalize else total
    scores.setdefault(cond, {}).setdefault(i, [0.0, 0.0])[side] = value
  out = {}
  for cond, by_pair in scores.items():
    margins = np.array([pos - neg for pos, neg in by_pair.values()])
    wins = (margins > 0).sum() + 0.5 * (margins == 0).sum()
    out[cond] = {"accuracy": float(wins / len(margins)), "pairs": int(len(margins)),
                 "ties": int((margins == 0).sum()), "mean_margin": float(margins.mean())}
  return out


# -- from text and audio ----------------------------------------------------------------------
def _words(text: str) -> list[str]:
  return normalize_transcript(text).split()


def tokenize_pair(session, pair: Pair, audio_cache: Optional[dict] = None) -> TokenizedPair:
  """Text through the session's text vocabulary (an ending's words encoded after the prompt's,
  as in running text), audio through its speech tokenizer."""
  audio_cache = {} if audio_cache is None else audio_cache

  def frames(path):
    if not path:
      return None
    if path not in audio_cache:
      audio_cache[path] = session.encode_audio(path)
    return audio_cache[path]

  prompt_words = _words(pair.prompt.text) if pair.prompt is not None else []
  text_vocab = session.text_vocab

  def ending_ids(side: Side):
    words = _words(side.text)
    if not words or text_vocab is None:
      return None
    ids, lens = text_vocab.encode_words(prompt_words + words)
    return ids[int(lens[:len(prompt_words)].sum()):]

  prompt = None
  if pair.prompt is not None:
    ids = text_vocab.encode_words(prompt_words)[0] if prompt_words and text_vocab else None
    prompt = Tokens(ids, frames(pair.prompt.audio))
  return TokenizedPair(pair.id, Tokens(ending_ids(pair.positive), frames(pair.positive.audio)),
                       Tokens(ending_ids(pair.negative), frames(pair.negative.audio)), prompt)


def evaluate_pairs(session, pairs: Sequence[Pair], *, conditions: Sequence[str] = CONDITIONS,
                   normalize: bool = False, include_eos: bool = True, batch_size: int = 16,
                   scorer: Optional[LikelihoodScorer] = None, progress: bool = True) -> dict:
  """Tokenizes the pairs with the session's tokenizers and scores them (`score_tokenized`)."""
  cache: dict = {}
  tokenized = [tokenize_pair(session, p, cache) for p in pairs]
  return score_tokenized(session.model, tokenized, conditions=conditions, normalize=normalize,
                         include_eos=include_eos, batch_size=batch_size, scorer=scorer,
                         progress=progress)


# -- sets on disk ---------------------------------------------------------------------------
def _side(obj, base: str, where: str) -> Side:
  if not isinstance(obj, dict):
    raise EvalInputError(f"{where}: expected an object with text and/or audio")
  audio = obj.get("audio")
  if audio:
    audio = os.path.join(base, audio)
  side = Side(str(obj.get("text", "")), audio)
  if not side.text.strip() and not side.audio:
    raise EvalInputError(f"{where}: a side needs text or audio")
  return side


def read_pairs_jsonl(path: str, max_pairs: Optional[int] = None) -> list[Pair]:
  """One pair per line: {"id", "positive": {"text", "audio"}, "negative": {...},
  "prompt": {...} (optional)}; audio paths relative to the file's folder."""
  base = os.path.dirname(os.path.abspath(path))
  out = []
  with open(path, encoding="utf-8") as f:
    for n, line in enumerate(f, 1):
      if not line.strip():
        continue
      try:
        rec = json.loads(line)
      except json.JSONDecodeError as e:
        raise EvalInputError(f"{path}:{n}: not JSON ({e})") from None
      if not isinstance(rec, dict) or "positive" not in rec or "negative" not in rec:
        raise EvalInputError(f"{path}:{n}: expected an object with positive and negative")
      prompt = rec.get("prompt")
      out.append(Pair(str(rec.get("id", n)), _side(rec["positive"], base, f"{path}:{n}"),
                      _side(rec["negative"], base, f"{path}:{n}"),
                      _side(prompt, base, f"{path}:{n}") if prompt else None))
      if max_pairs is not None and len(out) >= max_pairs:
        break
  if not out:
    raise EvalInputError(f"{path} has no pairs")
  return out


def load_pair_sets(path: str, max_pairs: Optional[int] = None) -> dict[str, list[Pair]]:
  """{set name: pairs} from a jsonl, a folder of jsonl sets (`slm-eval build-pairwise`), a
  ZeroSpeech 2021 lexical / syntactic folder (wavs + gold.csv), a spoken StoryCloze folder, or
  a folder holding such folders (e.g. the ZeroSpeech root: lexical/dev, syntactic/dev)."""
  from slm_jax.evaluation import pairwise_official  # pylint: disable=import-outside-toplevel
  if os.path.isfile(path):
    return {os.path.splitext(os.path.basename(path))[0]: read_pairs_jsonl(path, max_pairs)}
  if not os.path.isdir(path):
    raise EvalInputError(f"pair set {path!r} does not exist")
  name = os.path.basename(os.path.normpath(path))
  if os.path.exists(os.path.join(path, pairwise_official.GOLD_FILE)):
    return {name: pairwise_official.read_zerospeech(path, max_pairs)}
  jsonls = sorted(f for f in os.listdir(path) if f.endswith(".jsonl"))
  if jsonls:
    return {os.path.splitext(f)[0]: read_pairs_jsonl(os.path.join(path, f), max_pairs)
            for f in jsonls}
  if pairwise_official.looks_like_storycloze(path):
    return {name: pairwise_official.read_storycloze(path, max_pairs)}
  out = {}
  for sub in sorted(os.listdir(path)):
    full = os.path.join(path, sub)
    if os.path.isdir(full):
      try:
        found = load_pair_sets(full, max_pairs)
      except EvalInputError:
        continue
      out.update({f"{sub}/{k}" if k != sub else sub: v for k, v in found.items()})
  if not out:
    raise EvalInputError(
        f"no pair sets in {path!r}: expected *.jsonl sets (slm-eval build-pairwise), a ZeroSpeech "
        f"2021 folder (*.wav + {pairwise_official.GOLD_FILE}) or a spoken StoryCloze folder "
        "(<n>_correct.wav / <n>_incorrect.wav)")
  return out
