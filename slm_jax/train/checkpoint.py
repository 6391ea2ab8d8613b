"""Orbax checkpoints of the whole run: train state, data-iterator state, config and vocabulary.

Each checkpoint `<workdir>/checkpoints/<step>/` holds four items:
  state   the TrainState pytree (params, optimizer state, step, rng, NaN-guard counters), sharded
  data    {"process_count": P, "states": [state of process 0, ..., P-1]}: every process's
          DataIterator.get_state() (JSON), gathered to the primary host
  config  {"operative_gin": "..."}: the operative gin config text
  vocab   the UnifiedVocab spec (UnifiedVocab.to_dict())

Orbax writes a checkpoint into a temporary directory and renames it only once complete, and lists
only finalized steps, so a run killed mid-save resumes from the previous complete checkpoint.
"""
from __future__ import annotations

import dataclasses
import json
import logging
import os

import gin
import jax
import numpy as np
import orbax.checkpoint as ocp

from slm_jax.configuration import ConfigError
from slm_jax.errors import SlmError
from slm_jax.train.param_paths import param_path
from slm_jax.unified_vocab import UnifiedVocab


class CheckpointMismatchError(SlmError, ValueError):
  """The checkpoint was written for another model or optimizer configuration."""


@gin.configurable
@dataclasses.dataclass(frozen=True)
class CheckpointOptions:
  """Checkpoint policy bound from gin (`CheckpointOptions.save_every = 500`, ...).

  Attributes:
    save_every: save every N steps (0: only at the end of the run).
    keep_last: keep the last k checkpoints (None: keep all).
    keep_every: also keep every m-th step forever (None: none).
    async_save: write checkpoints in the background while training continues.
  """
  save_every: int = 1000
  keep_last: int | None = 3
  keep_every: int | None = None
  async_save: bool = True

  def __post_init__(self):
    if self.save_every < 0:
      raise ConfigError(f"CheckpointOptions.save_every={self.save_every} must be >= 0")
    if self.keep_last is not None and self.keep_last < 1:
      raise ConfigError(f"CheckpointOptions.keep_last={self.keep_last} must be >= 1 or None")
    if self.keep_every is not None and self.keep_every < 1:
      raise ConfigError(f"CheckpointOptions.keep_every={self.keep_every} must be >= 1 or None")


def _gather_json(obj) -> list:
  """Every process's JSON-serializable object, in process order (on every process)."""
  if jax.process_count() == 1:
    return [obj]
  from jax.experimental import multihost_utils  # pylint: disable=import-outside-toplevel
  raw = np.frombuffer(json.dumps(obj).encode(), np.uint8)
  lengths = np.asarray(multihost_utils.process_allgather(np.int32(raw.size))).reshape(-1)
  buf = np.zeros(int(lengths.max()), np.uint8)
  buf[:raw.size] = raw
  every = np.asarray(multihost_utils.process_allgather(buf)).reshape(len(lengths), -1)
  return [json.loads(every[i, :lengths[i]].tobytes().decode()) for i in range(len(lengths))]


def _handler_registry():
  registry = ocp.handlers.DefaultCheckpointHandlerRegistry()
  for args in (ocp.args.StandardSave, ocp.args.StandardRestore):
    registry.add("state", args, ocp.StandardCheckpointHandler)
  for item in ("data", "config", "vocab"):
    for args in (ocp.args.JsonSave, ocp.args.JsonRestore):
      registry.add(item, args, ocp.JsonCheckpointHandler)
  return registry


class Checkpointer:
  """CheckpointManager for TrainState + data-iterator state + operative config + vocab."""

  def __init__(self, directory: str, options: CheckpointOptions | None = None):
    """`options` default to the gin-bound CheckpointOptions()."""
    o = options if options is not None else CheckpointOptions()
    self.directory = os.path.abspath(directory)
    self.save_every = o.save_every
    self.manager = ocp.CheckpointManager(
        self.directory,
        options=ocp.CheckpointManagerOptions(
            max_to_keep=o.keep_last, keep_period=o.keep_every,
            enable_async_checkpointing=o.async_save, cleanup_tmp_directories=True,
            create=True),
        handler_registry=_handler_registry())

  def latest_step(self) -> int | None:
    return self.manager.latest_step()

  def all_steps(self) -> list[int]:
    return list(self.manager.all_steps())

  def should_save(self, step: int) -> bool:
    return self.save_every > 0 and step % self.save_every == 0

  def save(self, step: int, state, data_state: dict, vocab: UnifiedVocab, force: bool = False) -> bool:
    """Starts an (async) save; every process must call it. Returns whether a save started."""
    states = _gather_json(data_state)
    if step in self.manager.all_steps():
      return False
    saved = self.manager.save(step, args=ocp.args.Composite(
        state=ocp.args.StandardSave(state),
        data=ocp.args.JsonSave({"process_count": len(states), "states": states}),
        config=ocp.args.JsonSave({"operative_gin": gin.operative_config_str()}),
        vocab=ocp.args.JsonSave(vocab.to_dict())), force=force)
    if saved:
      logging.info("checkpoint: saving step %d to %s", step, self.directory)
    return saved

  def close(self) -> None:
    self.manager.wait_until_finished()
    self.manager.close()

  # -- restore --------------------------------------------------------------------------------
  def check_compatible(self, step: int, target) -> None:
    """Raises CheckpointMismatchError naming the first parameter whose path or shape differs."""
    saved = self.manager.item_metadata(step)["state"]
    if saved is None:
      return
    saved_tree = getattr(saved, "tree", saved)
    saved_leaves = {param_path(p): getattr(v, "shape", None)
                    for p, v in jax.tree_util.tree_flatten_with_path(saved_tree)[0]}
    want = {param_path(p): v.shape for p, v in jax.tree_util.tree_flatten_with_path(target)[0]}
    where = f"checkpoint {self.directory}/{step}"
    for path, shape in want.items():
      if path not in saved_leaves:
        raise CheckpointMismatchError(
            f"{where} has no entry {path!r} (the model/optimizer config differs: e.g. layers, tied "
            "embeddings or frozen parameters); use the config the checkpoint was written with "
            "(its operative_gin) or a fresh --workdir")
      if saved_leaves[path] is not None and tuple(saved_leaves[path]) != tuple(shape):
        raise CheckpointMismatchError(
            f"{where}: parameter {path!r} has shape {tuple(saved_leaves[path])} in the checkpoint "
            f"but {tuple(shape)} in this model; use the model config the checkpoint was written "
            "with, or a fresh --workdir")
    extra = sorted(set(saved_leaves) - set(want))
    if extra:
      raise CheckpointMismatchError(
          f"{where} has entries this model lacks, e.g. {extra[:3]}; the model config differs")

  def restore(self, step: int, target, vocab: UnifiedVocab | None = None):
    """(state, this process's data state | None, operative gin text) for `step`.

    `target` is the abstract TrainState with ShapeDtypeStructs carrying the target shardings and
    dtypes: arrays are resharded onto the current mesh and cast to the target dtypes.
    """
    self.check_compatible(step, target)
    restored = self.manager.restore(step, args=ocp.args.Composite(
        state=ocp.args.StandardRestore(target), data=ocp.args.JsonRestore(),
        config=ocp.args.JsonRestore(), vocab=ocp.args.JsonRestore()))
    if vocab is not None and restored["vocab"]:
      vocab.check_compatible(UnifiedVocab.from_dict(restored["vocab"]), what="checkpoint")
    data = restored["data"] or {}
    states = data.get("states") or []
    data_state = None
    if states:
      if len(states) != jax.process_count():
        raise CheckpointMismatchError(
            f"checkpoint step {step} holds data-iterator states of {len(states)} processes but this "
            f"run has {jax.process_count()}; resume with the same number of hosts")
      data_state = states[jax.process_index()]
    return restored["state"], data_state, (restored["config"] or {}).get("operative_gin", "")
