"""The train loop's data factories: cached_task_data (grain) and seqio_task_data (tf.data)."""
import json

import numpy as np
import pytest

from slm_jax.data import cache
from slm_jax.data.pipeline import factories
from slm_jax.data.synthetic import synthetic_examples
from slm_jax.unified_vocab import UnifiedVocab
from slm_jax.data.batch import HostShard

VOCAB = UnifiedVocab(text_size=100, speech_codebook_sizes=(64,))
L = 32


@pytest.fixture(scope="module")
def cache_root(tmp_path_factory):
  root = tmp_path_factory.mktemp("mixture")
  for split, num in (("train", 60), ("validation", 5)):
    rates = {}
    for task, seed in (("a", 1), ("b", 2)):
      exs = synthetic_examples(VOCAB, num, mean_len=12, seed=seed + 10 * num, max_len=L + 1)
      cache.write_cache(exs, str(root / split / task), VOCAB, task=task, split=split, progress=False)
      rates[task] = 1.0
    (root / split / "mixture.json").write_text(json.dumps({"mixture": "m", "rates": rates}))
  return str(root)


def _factory(cache_root, split, shard=HostShard(0, 1, 0, 4)):
  return factories.cached_task_data(split=split, batch_size=4, seq_len=L, vocab=VOCAB, shard=shard,
                                    seed=0, cache_root=cache_root)


def test_train_iterator_resumes_exactly(cache_root):
  it = _factory(cache_root, "train")
  first = [next(it) for _ in range(3)]
  state = it.get_state()
  json.dumps(state)   # the checkpoint stores it as JSON
  expected = [next(it) for _ in range(2)]
  resumed = _factory(cache_root, "train")
  resumed.set_state(state)
  for want in expected:
    got = next(resumed)
    for k in want:
      np.testing.assert_array_equal(got[k], want[k])
  assert first[0]["tokens"].shape == (4, L)


def test_eval_iterator_pads_after_the_end_with_zero_weight(cache_root):
  it = _factory(cache_root, "eval")
  batches = [next(it) for _ in range(12)]   # 10 short validation documents fit in far fewer
  assert batches[0]["loss_weights"].sum() > 0
  assert batches[-1]["loss_weights"].sum() == 0 and batches[-1]["segment_ids"].sum() == 0
  assert {k: v.shape for k, v in batches[-1].items()} == {k: v.shape for k, v in batches[0].items()}


def test_missing_cache_names_the_command(tmp_path):
  with pytest.raises(FileNotFoundError, match="slm-data cache"):
    _factory(str(tmp_path), "train")


def test_row_layout_mismatch_is_refused(cache_root):
  with pytest.raises(ValueError, match="each host owns its block"):
    _factory(cache_root, "train", shard=HostShard(1, 2, 0, 2))


SEQIO_TASK = "test_train_data_synthetic"


@pytest.fixture(scope="module")
def seqio_task():
  tf = pytest.importorskip("tensorflow")
  seqio = pytest.importorskip("seqio")

  def dataset_fn(split, shuffle_files, seed=None):
    del shuffle_files, seed
    exs = list(synthetic_examples(VOCAB, 60 if split == "train" else 5, mean_len=12,
                                  seed=1 if split == "train" else 2, max_len=L + 1))
    sig = {"tokens": tf.TensorSpec([None], tf.int32), "loss_mask": tf.TensorSpec([None], tf.float32)}
    return tf.data.Dataset.from_generator(
        lambda: iter({k: e[k] for k in sig} for e in exs), output_signature=sig)
  pass_through = seqio.PassThroughVocabulary(size=VOCAB.size)
  if SEQIO_TASK not in seqio.TaskRegistry.names():
    seqio.TaskRegistry.add(
        SEQIO_TASK, source=seqio.FunctionDataSource(dataset_fn, ["train", "validation"]),
        preprocessors=[], output_features={
            "tokens": seqio.Feature(pass_through, add_eos=False, dtype=tf.int32),
            "loss_mask": seqio.Feature(pass_through, add_eos=False, dtype=tf.float32)})
  return SEQIO_TASK


def _seqio_factory(task, split):
  return factories.seqio_task_data(split=split, batch_size=4, seq_len=L, vocab=VOCAB,
                                   shard=HostShard(0, 1, 0, 4), seed=0, task=task)


def test_seqio_switch_gives_the_same_batch_layout_and_resumes(seqio_task, cache_root):
  grain_batch = next(_factory(cache_root, "train"))
  it = _seqio_factory(seqio_task, "train")
  batch = next(it)
  assert {k: (v.shape, v.dtype) for k, v in batch.items()} == \
      {k: (v.shape, v.dtype) for k, v in grain_batch.items()}
  state = it.get_state()
  want = next(it)
  resumed = _seqio_factory(seqio_task, "train")
  resumed.set_state(state)
  np.testing.assert_array_equal(next(resumed)["tokens"], want["tokens"])


def test_seqio_eval_is_finite_then_padding(seqio_task):
  it = _seqio_factory(seqio_task, "eval")
  batches = [next(it) for _ in range(6)]
  assert batches[0]["loss_weights"].sum() > 0 and batches[-1]["loss_weights"].sum() == 0


def test_train_loop_resumes_on_exactly_the_same_data(cache_root, tmp_path):
  """The grain iterator state rides in the checkpoint: a cut-and-resumed run equals a full one."""
  import gin
  import jax
  from slm_jax import configuration
  from slm_jax.train import loop
  params = [
      "ModelConfig.num_layers = 1", "ModelConfig.embed_dim = 32", "ModelConfig.mlp_dim = 64",
      "ModelConfig.head_dim = 8", "ModelConfig.vocab_pad_multiple = 8",
      "UnifiedVocab.text_size = 100", "UnifiedVocab.speech_codebook_sizes = (64,)",
      "train.data_factory = @cached_task_data", f"cached_task_data.cache_root = '{cache_root}'",
      "make_mesh.ici_shape = {'data': 2, 'fsdp': -1}", "TOTAL_STEPS = 6", "BATCH_SIZE = 8",
      f"SEQ_LEN = {L}", "train.eval_every = 3", "train.eval_batches = 2",
      "CheckpointOptions.save_every = 2", "learning_rate_schedule.warmup_steps = 2"]

  def run(workdir, **kw):
    gin.clear_config()
    configuration.parse(["models/tiny.gin", "runs/pretrain.gin"], params, finalize=False)
    return loop.train(str(workdir), progress=False, **kw)

  full = run(tmp_path / "full")
  assert run(tmp_path / "cut", stop_after_steps=3)["stopped_at"] == 3   # saved at step 2
  resumed = run(tmp_path / "cut")
  gin.clear_config()
  assert [h["step"] for h in resumed["history"]] == [3, 4, 5, 6]
  assert [h["loss"] for h in resumed["history"]] == [h["loss"] for h in full["history"]][2:]
  # the cut run stopped before its step-3 evaluation; the resumed one evaluates at 3 and 6
  assert [(e["step"], e["loss/ce"]) for e in resumed["eval"]] == \
      [(e["step"], e["loss/ce"]) for e in full["eval"]]
  jax.tree.map(np.testing.assert_array_equal, jax.device_get(resumed["state"].params),
               jax.device_get(full["state"].params))
