"""Joint CTC/attention decoding: greedy at lambda 0 / beam 1, the CTC answer at lambda 1, padding
independence, and evaluate_asr(decoder="joint") end to end."""
import os
import sys

import jax.numpy as jnp
import numpy as np
import pytest

from slm_jax.evaluation import asr_eval
from slm_jax.evaluation.eval_sets import EvalUtterance
from slm_jax.inference import ctc_decoding, joint_decoding, prompts
from slm_jax.inference.batching import run_requests, Request
from slm_jax.inference.engine import Engine
from slm_jax.inference.sampling import SamplingConfig
from slm_jax.models import ctc_spelling
from slm_jax.models.heads import OutputHeads

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "models"))
from model_testing import make, tiny  # noqa: E402  pylint: disable=wrong-import-position

# Classes per frame (0 blank, c = text id c - 1) that the patched CTC head asserts.
PATTERN = [0, 8, 8, 0, 3, 0, 3, 0, 0, 5, 5, 5]


class _Session:
  def __init__(self, asr_ctc=True, seed=0):
    self.model = make(tiny(asr_ctc=asr_ctc), seed=seed)
    self.vocab = self.model.cfg.vocab

  def decode_text(self, ids):
    return " ".join(str(int(i)) for i in ids)


def _frames(lengths, seed=0, k=1):
  """Random speech frames [T, K] (codes below 8: within every test codebook)."""
  rng = np.random.default_rng(seed)
  return [rng.integers(0, 24 if k == 1 else 8, (t, k)).astype(np.int32) for t in lengths]


@pytest.fixture
def forced_head(monkeypatch):
  """A CTC head that, at the t-th speech frame of a row, says PATTERN[t] with near certainty."""
  def head(self, x_BTD):
    t = x_BTD.shape[1]
    classes_T = jnp.asarray((PATTERN * (t // len(PATTERN) + 1))[:t])
    one_hot = classes_T[:, None] == jnp.arange(self.cfg.vocab.text_size + 1)
    return jnp.broadcast_to(jnp.where(one_hot, 20.0, 0.0)[:, None],       # [B, T, U = 1, C]
                            x_BTD.shape[:2] + (1,) + one_hot.shape[-1:])
  monkeypatch.setattr(OutputHeads, "ctc_logits", head)
  joint_decoding._search_fn.cache_clear()     # pylint: disable=protected-access
  yield
  joint_decoding._search_fn.cache_clear()     # pylint: disable=protected-access


def _greedy_ids(model, frames, max_new):
  engine = Engine(model, slots=2, max_length=128, sampling_config=SamplingConfig(temperature=0.0))
  built = [prompts.asr(model.cfg.vocab, f) for f in frames]
  done = run_requests(engine, [Request(p.ids, p.codes, p.mode, max_new) for p in built])
  return [prompts.split_answer(model.cfg.vocab, c.tokens, c.codes)[0].tolist() for c in done]


@pytest.mark.parametrize("seed", [0, 1])
def test_lambda_0_beam_1_is_the_greedy_decoder(seed):
  model = _Session(seed=seed).model
  frames = _frames([5, 9, 3], seed)
  want = _greedy_ids(model, frames, max_new=6)
  got = joint_decoding.joint_decode_ids(model, frames, ctc_weight=0.0, beam_size=1,
                                        max_new_tokens=6, batch_size=2, bucket=16)
  assert [g.tolist() for g in got] == want


def test_lambda_1_recovers_the_ctc_answer_per_row_length(forced_head):
  model = _Session().model
  frames = _frames([3, 7, 12, 2])          # rows see PATTERN[:T]: padding frames must not count
  got = joint_decoding.joint_decode_ids(model, frames, ctc_weight=1.0, beam_size=4,
                                        max_new_tokens=8, batch_size=4, bucket=16)
  assert [g.tolist() for g in got] == [[7], [7, 2, 2], [7, 2, 2, 4], [7]]


def test_mixed_weights_with_a_confident_ctc_head_follow_it(forced_head):
  model = _Session().model
  got = joint_decoding.joint_decode_ids(model, _frames([7, 12]), ctc_weight=0.5, beam_size=3,
                                        max_new_tokens=8, batch_size=2, bucket=16)
  assert [g.tolist() for g in got] == [[7, 2, 2], [7, 2, 2, 4]]


def test_results_do_not_depend_on_the_batch_a_row_shares():
  model = _Session(seed=2).model
  frames = _frames([4, 11, 6], seed=2)
  kw = dict(ctc_weight=0.4, beam_size=3, max_new_tokens=5, bucket=16)
  together = joint_decoding.joint_decode_ids(model, frames, batch_size=3, **kw)
  alone = [joint_decoding.joint_decode_ids(model, [f], batch_size=3, **kw)[0] for f in frames]
  assert [x.tolist() for x in together] == [x.tolist() for x in alone]


def test_wider_beams_never_score_worse_than_greedy_at_lambda_0():
  model = _Session(seed=1).model
  frames = _frames([6, 8], seed=4)
  search = joint_decoding._search_fn    # pylint: disable=protected-access
  scores = {}
  for w in (1, 4):
    graphdef, params = __import__("flax").nnx.split(model)
    fn = search(graphdef, w, 0.0, 5)
    built = [prompts.asr(model.cfg.vocab, f) for f in frames]
    tokens = np.zeros((2, 16), np.int32)
    for i, p in enumerate(built):
      tokens[i, :p.ids.size] = p.ids
    lengths = np.array([p.ids.size for p in built], np.int32)
    _, _, score = fn(params, tokens, None, lengths, np.array([3, 3], np.int32),
                     np.array([6, 8], np.int32))
    scores[w] = np.asarray(score)
  assert (scores[4] >= scores[1] - 1e-5).all()


def test_bad_settings_and_models_without_a_ctc_head_are_refused():
  with pytest.raises(joint_decoding.JointDecodingError, match="ctc_weight"):
    joint_decoding.joint_decode_ids(_Session().model, _frames([3]), ctc_weight=1.5)
  with pytest.raises(joint_decoding.JointDecodingError, match="beam_size"):
    joint_decoding.joint_decode_ids(_Session().model, _frames([3]), beam_size=0)
  with pytest.raises(ctc_decoding.NoCtcHeadError, match="CTC head"):
    joint_decoding.joint_decode_ids(_Session(asr_ctc=False).model, _frames([3]))


@pytest.mark.parametrize("paired", [True, False])
def test_a_zipper_at_lambda_0_beam_1_is_its_greedy_decoder(paired):
  """The search drives both towers' caches (reordered per beam) and reads the CTC head on the
  speech tower: with no CTC weight and one beam it writes what the engine's greedy decoding does."""
  from zipper_testing import tiny_zipper  # pylint: disable=import-outside-toplevel
  model = make(tiny_zipper(asr_ctc=True), seed=3)
  model.paired = paired
  frames = _frames([5, 9, 3], seed=3, k=3)
  want = _greedy_ids(model, frames, max_new=6)
  got = joint_decoding.joint_decode_ids(model, frames, ctc_weight=0.0, beam_size=1,
                                        max_new_tokens=6, batch_size=2, bucket=16)
  assert [g.tolist() for g in got] == want
  assert any(len(w) for w in want)


def test_a_zipper_with_a_confident_ctc_head_follows_it(forced_head):
  """The forced head is its speech tower's (ZipperHeads.ctc_logits reads h.speech)."""
  from zipper_testing import tiny_zipper  # pylint: disable=import-outside-toplevel
  model = make(tiny_zipper(asr_ctc=True))
  got = joint_decoding.joint_decode_ids(model, _frames([12, 3], k=3), ctc_weight=1.0, beam_size=3,
                                        max_new_tokens=8, batch_size=2, bucket=16)
  assert [g.tolist() for g in got] == [[7, 2, 2, 4], [7]]


# A character head: alphabet classes 1 " ", 2 a, 3 b, 4 c, 5 e; text ids 3 -> " a", 5 -> "bee",
# 6 -> "be", 9 -> "e", 7 -> "c", 8 -> "cc", 11 -> "x" (outside the alphabet: spells nothing).
CHARS = " abce"
PIECES = {3: " a", 5: "bee", 6: "be", 9: "e", 7: "c", 8: "cc", 11: "x"}
# Two outputs per frame (U = 2), read in time order: "bee a" then "cc" (blank between the c's).
CHAR_PATTERN = [3, 5, 0, 5, 1, 2, 0, 0, 4, 0, 4, 0]


def _char_model(seed=0):
  return make(tiny(asr_ctc=True, ctc_alphabet=CHARS, ctc_upsample=2), seed=seed)


def _char_spelling():
  index = {ch: i + 1 for i, ch in enumerate(CHARS)}
  return ctc_spelling.CtcSpelling(CHARS, tuple(
      tuple(index[ch] for ch in PIECES.get(i, "") if ch in index) for i in range(40)))


@pytest.fixture
def forced_char_head(monkeypatch):
  def head(self, x_BTD):
    t = x_BTD.shape[1]
    classes = jnp.asarray((CHAR_PATTERN * (t // 6 + 1))[:2 * t]).reshape(t, 2)
    one_hot = classes[..., None] == jnp.arange(self.cfg.ctc_classes)
    return jnp.broadcast_to(jnp.where(one_hot, 20.0, 0.0), x_BTD.shape[:2] + one_hot.shape[1:])
  monkeypatch.setattr(OutputHeads, "ctc_logits", head)
  joint_decoding._search_fn.cache_clear()     # pylint: disable=protected-access
  yield
  joint_decoding._search_fn.cache_clear()     # pylint: disable=protected-access


def test_a_character_head_at_lambda_1_writes_the_pieces_that_spell_its_answer(forced_char_head):
  """Rows of 2, 4 and 6 frames hear "bee", "bee a" and "bee acc": the only pieces spelling them
  exactly (not "be" + "e", which CTC hears as one e) win, whatever the untrained decoder says."""
  got = joint_decoding.joint_decode_ids(_char_model(), _frames([2, 4, 6]), ctc_weight=1.0,
                                        beam_size=4, pre_beam=40, max_new_tokens=6,
                                        batch_size=3, bucket=16, spelling=_char_spelling())
  assert [g.tolist() for g in got] == [[5], [5, 3], [5, 3, 8]]


@pytest.mark.parametrize("seed", [0, 1])
def test_a_character_head_at_lambda_0_beam_1_is_the_greedy_decoder(seed):
  model = _char_model(seed)
  frames = _frames([5, 9, 3], seed)
  want = _greedy_ids(model, frames, max_new=6)
  got = joint_decoding.joint_decode_ids(model, frames, ctc_weight=0.0, beam_size=1,
                                        max_new_tokens=6, batch_size=2, bucket=16,
                                        spelling=_char_spelling())
  assert [g.tolist() for g in got] == want


def test_a_character_head_needs_its_alphabets_spelling():
  with pytest.raises(joint_decoding.JointDecodingError, match="spells characters"):
    joint_decoding.joint_decode_ids(_char_model(), _frames([3]))
  other = ctc_spelling.CtcSpelling(" abcd", ((),) * 40)
  with pytest.raises(joint_decoding.JointDecodingError, match="spells characters"):
    joint_decoding.joint_decode_ids(_char_model(), _frames([3]), spelling=other)
  with pytest.raises(joint_decoding.JointDecodingError, match="pre_beam"):
    joint_decoding.joint_decode_ids(_char_model(), _frames([3]), spelling=_char_spelling(),
                                    pre_beam=0)


def test_evaluate_asr_with_the_joint_decoder(forced_head):
  session = _Session()
  frames = _frames([3, 7, 12])
  utts = [EvalUtterance(f"u{i}", text, None, spk) for i, (text, spk) in
          enumerate([("7", "a"), ("7 2 2", "b"), ("7 2 2 4", "a")])]
  r = asr_eval.evaluate_asr(session, utts, frames=frames, decoder="joint", ctc_weight=0.7,
                            beam_size=2, max_new_tokens=8, slots=2, progress=False)
  assert r["decoder"] == "joint" and r["ctc_weight"] == 0.7 and r["beam_size"] == 2
  assert r["cer"] == 0.0 and r["hypotheses"]["u2"] == "7 2 2 4"


@pytest.mark.parametrize("flags, message", [(["--ctc_weight", "1.5"], "ctc_weight"),
                                            (["--beam_size", "0"], "beam_size")])
def test_slm_eval_refuses_bad_joint_flags(tmp_path, flags, message):
  from slm_jax.tools import evaluate  # pylint: disable=import-outside-toplevel
  manifest = tmp_path / "m.jsonl"
  manifest.write_text("")
  args = evaluate.parse_args(["--checkpoint", str(tmp_path), "--asr_manifest", str(manifest)]
                             + flags)
  with pytest.raises(evaluate.EvalArgsError, match=message):
    evaluate._check_inputs(args)    # pylint: disable=protected-access
