"""Orbax checkpoints: reshard and dtype restore, clear mismatch errors, half-written checkpoints."""
import os
import shutil

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from slm_jax.train import checkpoint as ckpt_lib
from slm_jax.train import loop
from conftest import batches, mesh_of, tiny_config


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
  """A checkpoint written on 8 devices with FSDP after one train step."""
  cfg = tiny_config()
  run = loop.TrainRun(cfg, mesh=mesh_of(dict(fsdp=8)))
  state = run.init_state()
  (batch,) = batches(cfg, run.mesh)
  state, _ = run.train_step(state, batch)
  directory = str(tmp_path_factory.mktemp("ckpt"))
  ckpt = ckpt_lib.Checkpointer(directory, ckpt_lib.CheckpointOptions(save_every=1, keep_last=2))
  ckpt.save(1, state, {"step": 1}, cfg.vocab)
  ckpt.close()
  return directory, jax.device_get(state)


def test_restore_onto_another_mesh(saved):
  directory, expected = saved
  run = loop.TrainRun(tiny_config(), mesh=mesh_of(dict(tensor=2, data=2)))
  ckpt = ckpt_lib.Checkpointer(directory)
  state, data_state, gin_text = ckpt.restore(1, run.restore_target(), vocab=run.cfg.vocab)
  assert data_state == {"step": 1} and isinstance(gin_text, str)
  jax.tree.map(np.testing.assert_array_equal, jax.device_get(state), expected)
  leaf = state.params["decoder"]["blocks"]["mlp"]["up"]["kernel"]
  assert leaf.sharding.mesh.shape["tensor"] == 2 and len(leaf.sharding.device_set) == 4
  assert "tensor" in str(leaf.sharding.spec)


def test_restore_with_another_dtype(saved):
  directory, expected = saved
  run = loop.TrainRun(tiny_config(), mesh=mesh_of(dict(data=1)))
  target = run.restore_target()
  target = target.replace(params=jax.tree.map(
      lambda a: jax.ShapeDtypeStruct(a.shape, jnp.bfloat16, sharding=a.sharding), target.params))
  state, _, _ = ckpt_lib.Checkpointer(directory).restore(1, target)
  table = state.params["heads"]["tied_embed"]["table"]
  assert table.dtype == jnp.bfloat16
  np.testing.assert_array_equal(
      np.asarray(table), np.asarray(expected.params["heads"]["tied_embed"]["table"].astype(jnp.bfloat16)))


def test_checkpoint_of_another_model_names_the_parameter(saved):
  directory, _ = saved
  run = loop.TrainRun(tiny_config(mlp_dim=48), mesh=mesh_of(dict(data=1)))
  with pytest.raises(ckpt_lib.CheckpointMismatchError, match=r"decoder/blocks/mlp/\w+/kernel.*shape"):
    ckpt_lib.Checkpointer(directory).restore(1, run.restore_target())


def test_half_written_checkpoint_is_ignored(saved, tmp_path):
  directory, expected = saved
  work = tmp_path / "ckpt"
  shutil.copytree(directory, work)
  # what a process killed mid-save leaves behind: an unfinalized temporary step directory
  partial = work / "2.orbax-checkpoint-tmp-1234567"
  shutil.copytree(work / "1", partial)
  shutil.rmtree(partial / "state")
  ckpt = ckpt_lib.Checkpointer(str(work))
  assert ckpt.all_steps() == [1] and ckpt.latest_step() == 1
  run = loop.TrainRun(tiny_config(), mesh=mesh_of(dict(data=2)))
  state, _, _ = ckpt.restore(1, run.restore_target())
  jax.tree.map(np.testing.assert_array_equal, jax.device_get(state.params), expected.params)
  ckpt.close()
  assert not os.path.exists(partial)      # cleaned up, never promoted


def test_keep_last_and_keep_every(tmp_path):
  cfg = tiny_config()
  state = {"x": jnp.arange(3.0)}
  ckpt = ckpt_lib.Checkpointer(str(tmp_path), ckpt_lib.CheckpointOptions(
      save_every=1, keep_last=2, keep_every=4, async_save=False))
  for step in range(1, 11):
    ckpt.save(step, state, {"step": step}, cfg.vocab)
  ckpt.close()
  assert ckpt.all_steps() == [4, 8, 9, 10]


def test_checkpoint_of_another_vocabulary_is_a_clear_error(saved):
  """Same shapes, different speech tokenizer: restoring would pair the weights with the wrong
  ids, so it is refused with the differing field named."""
  import dataclasses  # pylint: disable=import-outside-toplevel
  from slm_jax.unified_vocab import VocabMismatchError  # pylint: disable=import-outside-toplevel
  directory, _ = saved
  run = loop.TrainRun(tiny_config(), mesh=mesh_of(dict(fsdp=8)))
  other = dataclasses.replace(run.cfg.vocab, speech_tokenizer_name="kmeans-512@25Hz-other")
  with pytest.raises(VocabMismatchError, match="speech_tokenizer_name"):
    ckpt_lib.Checkpointer(directory).restore(1, run.restore_target(), vocab=other)
