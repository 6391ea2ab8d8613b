"""Component caches written side by side (`slm-data cache --workers 2`): same files, both
processes busy, errors raised, bad flags refused before any work."""
import functools
import os
import time

import gin
import pytest

tf = pytest.importorskip("tensorflow")
seqio = pytest.importorskip("seqio")

from slm_jax.data.cache import side_by_side  # noqa: E402
from slm_jax.data.cache.tasks import MIXTURE_FILENAME, cache_splits  # noqa: E402
from slm_jax.data.synthetic import synthetic_examples  # noqa: E402
from slm_jax.tools import cli_errors  # noqa: E402
from slm_jax.tools import data as data_cli  # noqa: E402
from slm_jax.errors import SlmError  # noqa: E402
from slm_jax.unified_vocab import UnifiedVocab, VocabMismatchError  # noqa: E402

VOCAB = UnifiedVocab(text_size=100, speech_codebook_sizes=(64, 16, 16))
MIXTURE = "test_side_by_side_mix"


def _dataset_fn(index, split, shuffle_files, seed=None):
  del shuffle_files, seed
  exs = list(synthetic_examples(VOCAB, 30, mean_len=20, seed=index + (split == "validation"),
                                max_len=64))
  sig = {"tokens": tf.TensorSpec([None], tf.int32), "loss_mask": tf.TensorSpec([None], tf.float32),
         "speech_codes": tf.TensorSpec([None, 2], tf.int32)}
  return tf.data.Dataset.from_generator(lambda: iter(exs), output_signature=sig)


def register() -> None:
  """Two synthetic tasks and their mixture (also the spawned worker's setup)."""
  vocab = seqio.PassThroughVocabulary(size=VOCAB.size)
  feats = {"tokens": seqio.Feature(vocab, add_eos=False, dtype=tf.int32),
           "loss_mask": seqio.Feature(vocab, add_eos=False, dtype=tf.float32, required=False),
           "speech_codes": seqio.Feature(vocab, add_eos=False, dtype=tf.int32, rank=2,
                                         required=False)}
  for i in range(2):
    name = f"{MIXTURE}_{i}"
    if name not in seqio.TaskRegistry.names():
      seqio.TaskRegistry.add(name, source=seqio.FunctionDataSource(
          functools.partial(_dataset_fn, i), ["train", "validation"]),
          preprocessors=[], output_features=feats)
  if MIXTURE not in seqio.MixtureRegistry.names():
    seqio.MixtureRegistry.add(MIXTURE, [(f"{MIXTURE}_0", 1.0), (f"{MIXTURE}_1", 0.5)])


def _files(root):
  out = {}
  for d, _, names in os.walk(root):
    for n in names:
      with open(os.path.join(d, n), "rb") as f:
        out[os.path.relpath(os.path.join(d, n), root)] = f.read()
  return out


def test_two_workers_write_the_same_files(tmp_path):
  register()
  outs = lambda root: {s: str(tmp_path / root / s) for s in ("train", "validation")}  # noqa: E731
  one = cache_splits(MIXTURE, outs("one"), VOCAB, progress=False)
  two = cache_splits(MIXTURE, outs("two"), VOCAB, progress=False, workers=2, setup=register)
  assert [(i.task, i.split, i.num_examples) for i in one] == [
      (i.task, i.split, i.num_examples) for i in two] == [
      (f"{MIXTURE}_{t}", s, 30) for s in ("train", "validation") for t in range(2)]
  files = _files(tmp_path / "one")
  assert files == _files(tmp_path / "two")
  assert f"train/{MIXTURE_FILENAME}" in files and not any(".tmp-" in f for f in files)
  # An existing component cache is refused before any work (the other split is not written).
  with pytest.raises(FileExistsError, match="--overwrite"):
    cache_splits(MIXTURE, {"test": str(tmp_path / "three"), "train": outs("one")["train"]},
                 VOCAB, progress=False, workers=2, setup=register)
  assert not (tmp_path / "three").exists()


def _meet(i: int, folder: str) -> int:
  """Job i marks its arrival and waits for the other job: it ends only if both run at once."""
  open(os.path.join(folder, str(i)), "w").close()
  deadline = time.time() + 240
  while not os.path.exists(os.path.join(folder, str(1 - i))):
    if time.time() > deadline:
      raise TimeoutError("the two jobs did not run side by side")
    time.sleep(0.05)
  return os.getpid()


def _fail(message: str) -> None:
  raise ValueError(message)


def test_jobs_run_in_two_processes_and_errors_are_raised(tmp_path):
  pids = side_by_side.run_side_by_side(
      [functools.partial(_meet, i, str(tmp_path)) for i in range(2)], workers=2)
  assert len(set(pids)) == 2 and os.getpid() in pids
  assert side_by_side.run_side_by_side([functools.partial(int, "7")] * 3) == [7, 7, 7]
  with pytest.raises(ValueError, match="job 1 broke"):
    side_by_side.run_side_by_side(
        [functools.partial(int, "1"), functools.partial(_fail, "job 1 broke")], workers=2)


def test_several_splits_need_a_split_placeholder(tmp_path, capsys):
  code = cli_errors.run_main("slm-data", lambda: data_cli.main(
      ["cache", "--task", MIXTURE, "--split", "train,validation", "--out", str(tmp_path / "c")]))
  assert code == 2 and "'{split}'" in capsys.readouterr().err
  assert not (tmp_path / "c").exists()


@gin.configurable
def _mismatch(message: str) -> None:
  raise VocabMismatchError(message)


def _meet_then_mismatch_in_worker(i: int, folder: str, main_pid: int) -> int:
  """Both jobs run at once; the one in the spawned worker raises through a gin-configured call."""
  _meet(i, folder)
  if os.getpid() != main_pid:
    _mismatch(f"job {i} has another vocabulary")
  return i


def test_an_error_gin_rethrows_in_a_worker_comes_back_as_its_class(tmp_path):
  # gin re-raises as an instance of a subclass made at run time, which pickle cannot send back.
  with pytest.raises(VocabMismatchError, match="has another vocabulary") as caught:
    side_by_side.run_side_by_side(
        [functools.partial(_meet_then_mismatch_in_worker, i, str(tmp_path), os.getpid())
         for i in range(2)], workers=2)
  assert isinstance(caught.value, SlmError)


def test_portable_error_keeps_class_and_message():
  try:
    _mismatch("typo in the vocabulary")
  except VocabMismatchError as e:
    gin_error = e
  portable = side_by_side.portable_error(gin_error)
  assert type(portable) is VocabMismatchError and "typo in the vocabulary" in str(portable)
  plain = ValueError("fine")
  assert side_by_side.portable_error(plain) is plain
