"""Warm start from a Hugging Face Llama: the run's step-0 loss is the HF model's, then it trains on;
resuming never re-imports; the vocabulary comes from the HF tokenizer; mismatches are clear errors."""
import json
import os
import re
import subprocess
import sys

import jax
import numpy as np
import pytest
from flax import nnx
from scipy.special import logsumexp

torch = pytest.importorskip("torch", reason="the warm-start tests compare against transformers")
transformers = pytest.importorskip("transformers", reason="the warm-start tests need transformers")

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "export"))
from hf_testing import V_TEXT, make_hf, our_text_logits, save_word_tokenizer  # noqa: E402

from slm_jax import configuration  # noqa: E402
from slm_jax.errors import SlmError  # noqa: E402
from slm_jax.export.hf_import import HFImportError  # noqa: E402
from slm_jax.models import build  # noqa: E402
from slm_jax.train import loop, warm_start  # noqa: E402
from slm_jax.unified_vocab import UnifiedVocab  # noqa: E402

# The tiny HF Llama of hf_testing.make_hf (2 layers, width 32, untied), plus a speech tower and two
# speech channels that the checkpoint does not have.
MODEL = [
    "ModelConfig.num_layers = 2", "ModelConfig.embed_dim = 32", "ModelConfig.num_heads = 4",
    "ModelConfig.num_kv_heads = 2", "ModelConfig.head_dim = 8", "ModelConfig.mlp_dim = 48",
    "ModelConfig.rope_theta = 1000.0", "ModelConfig.norm_eps = 1e-5",
    "ModelConfig.tie_embeddings = False", "ModelConfig.vocab_pad_multiple = 8",
    "ModelConfig.speech_tower_layers = 1", "UnifiedVocab.speech_codebook_sizes = (16, 4)",
]
RUN = [
    "BATCH_SIZE = 8", "SEQ_LEN = 32", "train.eval_every = 0", "WARMUP_STEPS = 2",
    "PEAK_LR = 1e-2", "LossOptions.z_loss_weight = 0.0", "CheckpointOptions.save_every = 2",
    "SyntheticTask.max_len = 6",
]
FSDP = "make_mesh.ici_shape = {'data': 2, 'fsdp': -1}"   # imported parameters placed in shards


@pytest.fixture
def hf_dir(tmp_path):
  hf, path = make_hf(tmp_path, "hf_llama", arch="llama", tie=False)
  save_word_tokenizer(path)
  return hf, path


def _parse(path, extra=()):
  params = MODEL + RUN + ([f"WarmStart.hf_checkpoint = '{path}'"] if path else []) + list(extra)
  configuration.parse(["runs/pretrain.gin"], params, finalize=False)


def _train(workdir, path, extra=(), **kw):
  _parse(path, extra)
  return loop.train(str(workdir), progress=False, **kw)


class _FixedText:
  """A DataIterator that returns one fixed batch of text ids (HF ids [B, L+1]) at every step."""

  def __init__(self, ids, *, split, batch_size, seq_len, vocab, shard, seed):
    del split, seed
    assert ids.shape == (batch_size, seq_len + 1)
    unified = ids[shard.first_row:shard.first_row + shard.num_rows] + vocab.text_start
    b, l = unified.shape[0], seq_len
    self.batch = {"tokens": unified[:, :-1], "targets": unified[:, 1:],
                  "segment_ids": np.ones((b, l), np.int32),
                  "positions": np.tile(np.arange(l, dtype=np.int32), (b, 1)),
                  "loss_weights": np.ones((b, l), np.float32)}
    if vocab.num_channels > 1:
      codes = np.zeros((b, l, vocab.num_channels - 1), np.int32)
      self.batch.update(speech_codes=codes, target_speech_codes=codes)
    self.step = 0

  def __next__(self):
    self.step += 1
    return dict(self.batch)

  def get_state(self):
    return {"step": self.step}

  def set_state(self, state):
    self.step = state["step"]


def _hf_reference(hf, ids, head_DV, vocab):
  """transformers' loss on `ids`, and the same loss over our unified rows (HF text rows + new ones).

  Our softmax also covers the rows outside the text vocabulary (specials, speech): the warm start
  starts them at the mean HF row, so they take some probability mass at step 0. The second value
  adds exactly those rows' logits (HF's final hidden state times our new head columns) to the
  normalizer; everything else is computed by transformers.
  """
  x = torch.tensor(ids)
  with torch.no_grad():
    hf_loss = float(hf(x, labels=x).loss)
    hidden = hf.model(x).last_hidden_state
    logits = hf.lm_head(hidden).float().numpy()[:, :-1]
  hidden = hidden.float().numpy()[:, :-1]
  target = np.take_along_axis(logits, ids[:, 1:, None], -1)[..., 0]
  text = np.arange(vocab.text_start, vocab.speech_start)
  new_cols = np.setdiff1d(np.arange(vocab.size), text)
  new_logits = hidden @ head_DV[:, new_cols]
  lse_text = logsumexp(logits, -1)
  assert abs(float(np.mean(lse_text - target)) - hf_loss) < 1e-5   # our reading of transformers
  unified = np.logaddexp(lse_text, logsumexp(new_logits, -1)) - target
  return hf_loss, float(np.mean(unified))


def test_step0_loss_is_the_hf_models_and_speech_params_keep_their_init(tmp_path, hf_dir):
  hf, path = hf_dir
  ids = np.random.default_rng(0).integers(2, V_TEXT, (8, 33))
  factory = lambda **kw: _FixedText(ids, **kw)   # noqa: E731
  # Learning rate 0: the state after the step holds the warm-started parameters.
  result = _train(tmp_path / "run", path, ["TOTAL_STEPS = 1", "PEAK_LR = 0.0", FSDP],
                  data_factory=factory)
  cfg = warm_start.model_config(build.config_from_gin())
  params = jax.device_get(result["state"].params)
  hf_loss, unified_loss = _hf_reference(hf, ids, params["heads"]["kernel"], cfg.vocab)
  step0 = result["history"][0]["loss"]
  np.testing.assert_allclose(step0, unified_loss, rtol=1e-5)
  assert step0 > hf_loss   # the new rows' share of the softmax, nothing else
  # The run's text path is the HF model: equal logits on the text columns.
  graphdef, _ = nnx.split(build.build_abstract(cfg), nnx.Param)
  model = nnx.merge(graphdef, params)
  hf_logits = hf(torch.tensor(ids)).logits.detach().float().numpy()
  np.testing.assert_allclose(our_text_logits(model, cfg, ids), hf_logits, atol=1e-4, rtol=1e-4)
  # Speech-only parameters are those of a run without warm start (same seed; the eager init here
  # and the run's jitted one round the last bit differently).
  fresh = nnx.state(build.build(cfg, seed=0), nnx.Param).to_pure_dict()
  for name in ("speech_layers", "speech_channels"):
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-8),
                 params["towers"][name], fresh["towers"][name])
  # The vocabulary spec of the run is the HF tokenizer's.
  spec = UnifiedVocab.load(str(tmp_path / "run"))
  assert spec.text_size == V_TEXT and spec.text_vocab_name.startswith("hf_tokenizers:")
  assert spec.speech_codebook_sizes == (16, 4)


def test_trains_on_speech_text_and_resume_does_not_import_again(tmp_path, hf_dir, monkeypatch):
  _, path = hf_dir
  first = _train(tmp_path / "run", path, ["TOTAL_STEPS = 4"])   # the synthetic speech-text task
  losses = [h["loss"] for h in first["history"]]
  assert len(losses) == 4 and np.all(np.isfinite(losses))
  assert np.mean(losses[-2:]) < np.mean(losses[:2])

  def no_second_import(*a, **k):
    raise AssertionError("a resumed run imported the HF checkpoint again")

  monkeypatch.setattr(warm_start.hf_import, "import_weights", no_second_import)
  # The same command again resumes from step 4: the trained state, not the HF weights.
  again = _train(tmp_path / "run", path, ["TOTAL_STEPS = 4"])
  assert again["history"] == []
  jax.tree.map(np.testing.assert_array_equal, jax.device_get(again["state"].params),
               jax.device_get(first["state"].params))


def test_model_config_that_does_not_fit_names_fields_and_fix(tmp_path, hf_dir):
  _, path = hf_dir
  with pytest.raises(HFImportError) as e:
    _train(tmp_path / "run", path, ["TOTAL_STEPS = 1", "ModelConfig.embed_dim = 64",
                                    "ModelConfig.tie_embeddings = True"])
  msg = str(e.value)
  assert isinstance(e.value, SlmError)
  assert "ModelConfig.embed_dim = 32" in msg and "ModelConfig.tie_embeddings = False" in msg
  assert "mlp_dim" not in msg
  assert not os.path.exists(tmp_path / "run" / "checkpoints")


def test_gin_text_vocab_must_agree_with_the_tokenizer(tmp_path, hf_dir):
  _, path = hf_dir
  _parse(path, ["TOTAL_STEPS = 1", "UnifiedVocab.text_size = 256"])
  with pytest.raises(HFImportError, match=r"UnifiedVocab.text_size = 96\s+\(gin has 256\)"):
    warm_start.model_config(build.config_from_gin())
  _parse(path, ["TOTAL_STEPS = 1", f"UnifiedVocab.text_size = {V_TEXT}"])   # agreeing: fine
  assert warm_start.model_config(build.config_from_gin()).vocab.text_size == V_TEXT


def test_missing_tokenizer_is_a_clear_error(tmp_path):
  _, path = make_hf(tmp_path, "no_tokenizer")
  _parse(path, ["TOTAL_STEPS = 1"])
  with pytest.raises(HFImportError, match="tokenizer.json.*WarmStart.tokenizer"):
    warm_start.model_config(build.config_from_gin())


def test_printed_bindings_fit_the_checkpoint(hf_dir, capsys):
  _, path = hf_dir
  assert warm_start.main([path]) == 0
  lines = capsys.readouterr().out.splitlines()
  assert "ModelConfig.embed_dim = 32" in lines and "ModelConfig.tie_embeddings = False" in lines
  assert f"UnifiedVocab.text_size = {V_TEXT}" in lines
  configuration.parse(["runs/pretrain.gin"], lines + [f"WarmStart.hf_checkpoint = '{path}'"],
                      finalize=False)
  cfg = warm_start.model_config(build.config_from_gin())   # fits: no error
  assert f"UnifiedVocab.text_vocab_name = {cfg.vocab.text_vocab_name!r}" in lines


def test_without_warm_start_nothing_changes():
  _parse(None, ["TOTAL_STEPS = 1"])
  cfg = build.config_from_gin()
  assert warm_start.model_config(cfg) is cfg


@pytest.mark.slow
def test_slm_train_flag_end_to_end(tmp_path, hf_dir):
  _, path = hf_dir
  # a stated peak: the subprocesses skip measuring the host's matmul peak
  params = MODEL + RUN + ["TOTAL_STEPS = 2", "peak_flops.override_per_device = 1e11"]

  def slm_train(workdir, *extra):
    args = [sys.executable, "-m", "slm_jax.tools.train", "--gin_file=runs/pretrain.gin",
            f"--hf_checkpoint={path}", f"--workdir={workdir}", "--no_progress"]
    args += [f"--gin_param={p}" for p in params + list(extra)]
    return subprocess.run(args, capture_output=True, text=True, timeout=600, cwd=str(tmp_path),
                          env=dict(os.environ, JAX_PLATFORMS="cpu"))

  out = slm_train(tmp_path / "cli")
  assert out.returncode == 0, out.stderr[-3000:]
  assert "done at step 2" in out.stdout
  with open(tmp_path / "cli" / "vocab_spec.json") as f:
    assert json.load(f)["text_size"] == V_TEXT
  with open(tmp_path / "cli" / "operative_config.gin") as f:
    assert re.search(rf"WarmStart.hf_checkpoint = [\\\s]*'{re.escape(path)}'", f.read())
  bad = slm_train(tmp_path / "bad", "ModelConfig.embed_dim = 64")
  assert bad.returncode == 2 and "ModelConfig.embed_dim = 32" in bad.stderr, bad.stderr[-3000:]


# A Zipper whose text tower has the tiny HF Llama's shape, and a small speech tower of its own.
ZIPPER = [p for p in MODEL if not p.startswith("ModelConfig.speech_tower_layers")] + [
    "ModelConfig.architecture = 'zipper'",
    "ModelConfig.zipper_text = @text/TowerConfig()",
    "ModelConfig.zipper_speech = @speech/TowerConfig()",
    "text/TowerConfig.num_layers = 2", "text/TowerConfig.embed_dim = 32",
    "text/TowerConfig.num_heads = 4", "text/TowerConfig.num_kv_heads = 2",
    "text/TowerConfig.head_dim = 8", "text/TowerConfig.mlp_dim = 48",
    "text/TowerConfig.cross_every = 1",
    "speech/TowerConfig.num_layers = 1", "speech/TowerConfig.embed_dim = 16",
    "speech/TowerConfig.num_heads = 2", "speech/TowerConfig.num_kv_heads = 1",
    "speech/TowerConfig.head_dim = 8", "speech/TowerConfig.mlp_dim = 32",
    "speech/TowerConfig.cross_every = 1",
]


def test_a_zippers_text_tower_warm_starts_from_hf_and_computes_the_hf_model(tmp_path, hf_dir):
  hf, path = hf_dir
  ids = np.random.default_rng(1).integers(2, V_TEXT, (8, 33))
  factory = lambda **kw: _FixedText(ids, **kw)   # noqa: E731
  configuration.parse(["runs/pretrain.gin"],
                      ZIPPER + RUN + [f"WarmStart.hf_checkpoint = '{path}'", "TOTAL_STEPS = 1",
                                      "PEAK_LR = 0.0"], finalize=False)
  result = loop.train(str(tmp_path / "run"), progress=False, data_factory=factory)
  cfg = warm_start.model_config(build.config_from_gin())
  assert cfg.architecture == "zipper"
  params = jax.device_get(result["state"].params)
  graphdef, _ = nnx.split(build.build_abstract(cfg), nnx.Param)
  model = nnx.merge(graphdef, params)
  # Text-only rows: the text tower alone (cross-attention gates start at 0, the input MLP as the
  # identity) is the HF model, so the text logits are transformers' own.
  hf_logits = hf(torch.tensor(ids)).logits.detach().float().numpy()
  np.testing.assert_allclose(our_text_logits(model, cfg, ids), hf_logits, atol=1e-4, rtol=1e-4)
  # The speech tower is a fresh init (the HF checkpoint has none).
  fresh = nnx.state(build.build(cfg, seed=0), nnx.Param).to_pure_dict()
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-8),
               params["speech"], fresh["speech"])
