"""The train loop: mesh, sharded state, data, jit step, eval, metrics, profiler, checkpoints.

Rerunning the same command resumes from the last complete checkpoint of `workdir` (state, RNG and
data-iterator position), so the loss curve continues exactly where it stopped.
"""
from __future__ import annotations

import logging
import os
import time
from typing import Callable, Sequence

import gin
import jax
import numpy as np
from flax import nnx

from slm_jax import configuration, sharding
from slm_jax.errors import SlmError
from slm_jax.models import build
from slm_jax.models import loss as loss_lib
from slm_jax.train import checkpoint as ckpt_lib
from slm_jax.data import batch as data_lib
from slm_jax.train import metrics as metrics_lib
from slm_jax.train import optimizer as opt_lib
from slm_jax.train import state as state_lib
from slm_jax.train import step as step_lib
from slm_jax.train import warm_start
from slm_jax.data.synthetic import SyntheticTask


class NonFiniteError(SlmError, RuntimeError):
  """Too many consecutive steps had a non-finite loss or gradient."""


class TrainRun:
  """Everything a run needs, built from a model config and gin: mesh, shardings, step functions.

  Tests and tools use it directly; `train` drives it.
  """

  def __init__(self, cfg, *, mesh=None, rules=None, seed: int = 0, num_microbatches: int = 1,
               schedule=None, optimizer_options: opt_lib.OptimizerOptions | None = None,
               loss_options: loss_lib.LossOptions | None = None):
    """Options left None are the gin-bound ones (schedule, OptimizerOptions, LossOptions)."""
    self.cfg, self.seed = cfg, seed
    self.mesh = mesh if mesh is not None else sharding.make_mesh()
    self.rules = rules if rules is not None else sharding.logical_axis_rules()
    self.graphdef, abstract_nnx = nnx.split(build.build_abstract(cfg), nnx.Param)
    abstract_params = abstract_nnx.to_pure_dict()
    self.schedule = schedule if schedule is not None else opt_lib.learning_rate_schedule()
    opts = optimizer_options if optimizer_options is not None else opt_lib.OptimizerOptions()
    self.optimizer = opt_lib.make_optimizer(abstract_params, self.schedule, opts)
    self.trainable = opt_lib.trainable_mask(abstract_params, opts.freeze_patterns)
    self.num_params = int(sum(np.prod(x.shape) for x in jax.tree.leaves(abstract_params)))
    self.abstract_state = jax.eval_shape(
        lambda: state_lib.init_state(cfg, self.optimizer, seed))
    self.param_shardings = state_lib.param_shardings(abstract_nnx, self.mesh, self.rules)
    self.state_shardings = state_lib.state_shardings(
        self.abstract_state, self.param_shardings, self.mesh)
    self.loss_options = loss_options if loss_options is not None else loss_lib.LossOptions()
    self._step_fn = step_lib.make_train_step(
        self.graphdef, self.optimizer, self.schedule, self.trainable, vocab=cfg.vocab,
        loss_options=self.loss_options, num_microbatches=num_microbatches)
    self._jit_step = None
    self._jit_eval = None

  # -- state ----------------------------------------------------------------------------------
  def init_state(self) -> state_lib.TrainState:
    return jax.jit(lambda: state_lib.init_state(self.cfg, self.optimizer, self.seed),
                   out_shardings=self.state_shardings)()

  def restore_target(self):
    """Abstract TrainState with this run's shardings and dtypes (an Orbax restore target)."""
    return jax.tree.map(lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s),
                        self.abstract_state, self.state_shardings)

  # -- steps ----------------------------------------------------------------------------------
  def batch_shardings(self, batch) -> dict:
    return {k: data_lib.batch_sharding(self.mesh, k, v.shape, self.rules) for k, v in batch.items()}

  def train_step(self, state, batch):
    """One jit-compiled, state-donating train step on the mesh -> (state, metrics)."""
    if self._jit_step is None:
      self._jit_step = step_lib.jit_on_mesh(
          self._step_fn, self.mesh, self.rules,
          in_shardings=(self.state_shardings, self.batch_shardings(batch)),
          out_shardings=(self.state_shardings, step_lib.replicated(self.mesh)), donate_argnums=(0,))
    return self._jit_step(state, batch)

  def eval_sums(self, params, batch) -> dict:
    if self._jit_eval is None:
      fn = step_lib.make_eval_step(self.graphdef, loss_options=self.loss_options)
      self._jit_eval = step_lib.jit_on_mesh(
          fn, self.mesh, self.rules, in_shardings=(self.param_shardings, self.batch_shardings(batch)),
          out_shardings=step_lib.replicated(self.mesh))
    return self._jit_eval(params, batch)


def _evaluate(run: TrainRun, params, iterator, num_batches: int, batch_size: int) -> dict:
  total = None
  for _ in range(num_batches):
    batch = data_lib.global_batch(next(iterator), run.mesh, batch_size, run.rules)
    sums = jax.device_get(run.eval_sums(params, batch))
    total = sums if total is None else jax.tree.map(np.add, total, sums)
  return {k: float(v) for k, v in loss_lib.metrics_from_sums(total).items() if np.ndim(v) == 0}


@gin.configurable
def train(workdir: str, *, total_steps: int = gin.REQUIRED, batch_size: int = gin.REQUIRED,
          seq_len: int = gin.REQUIRED, num_microbatches: int = 1, seed: int = 0,
          data_factory: Callable = SyntheticTask, eval_data_factory: Callable | None = None,
          eval_every: int = 0, eval_batches: int = 2, log_every: int = 10,
          max_nonfinite_in_row: int = 5, profile_steps: Sequence[int] | None = None,
          progress: bool = True, stop_after_steps: int | None = None,
          periodic_evals: Sequence[Callable] = (), periodic_eval_every: int = 0) -> dict:
  """Trains (or resumes) a run in `workdir`; returns {"history": [...], "eval": [...], ...}.

  Args:
    total_steps, batch_size (global), seq_len: the run's length and shape.
    num_microbatches: gradient accumulation inside the step (batch_size must divide by it).
    data_factory / eval_data_factory: DataIterator factories (data/batch.py); eval defaults to the
      train factory with split="eval".
    eval_every: evaluate every N steps on `eval_batches` held-out batches (0: never).
    max_nonfinite_in_row: stop after this many consecutive skipped (non-finite) steps.
    profile_steps: (a, b) captures a profiler trace of steps [a, b) into workdir/profile.
    stop_after_steps: end this invocation after that many steps without a final save (tests use
      it to simulate an interruption).
    periodic_evals / periodic_eval_every: hooks `hook(model, vocab, step) -> {name: float}` run
      every N steps on the live parameters (ASR CER, pairwise accuracy: evaluation/periodic.py);
      their scalars go to TensorBoard under eval/ and to the result's "periodic_eval".
  """
  cfg = warm_start.model_config(build.config_from_gin())   # the HF text vocabulary, if any
  run = TrainRun(cfg, seed=seed, num_microbatches=num_microbatches)
  is_main = jax.process_index() == 0
  ckpt = ckpt_lib.Checkpointer(os.path.join(workdir, "checkpoints"))
  shard = data_lib.host_shard(run.mesh, batch_size, seq_len, run.rules)
  make = lambda factory, split: factory(split=split, batch_size=batch_size, seq_len=seq_len,
                                        vocab=cfg.vocab, shard=shard, seed=seed)
  train_iter = make(data_factory, "train")
  peak = metrics_lib.peak_flops()
  start = ckpt.latest_step()
  if start is not None:
    state, data_state, _ = ckpt.restore(start, run.restore_target(), vocab=cfg.vocab)
    if data_state is not None:
      train_iter.set_state(data_state)
    logging.info("resumed from %s/%d", ckpt.directory, start)
  else:
    state, start = warm_start.init_state(run), 0   # the HF text path, if any: step 0 only
  if periodic_evals and periodic_eval_every:
    from slm_jax.evaluation.periodic import check_eval_tokenizers  # pylint: disable=import-outside-toplevel
    check_eval_tokenizers(cfg.vocab)   # now, not after periodic_eval_every steps
  # Only now: a rerun that a checkpoint refused (another model or vocabulary) must not overwrite
  # the record of the run that wrote it. Every configurable the run uses has been called.
  if is_main:
    configuration.write_operative_config(workdir)
    cfg.vocab.save(workdir)
  eval_iter_factory = eval_data_factory or data_factory

  writer = metrics_lib.MetricWriter(os.path.join(workdir, "tensorboard"))
  flops_per_step = metrics_lib.model_flops_per_token(cfg, seq_len)[0] * batch_size * seq_len
  if is_main:
    print(f"slm-train: {run.num_params / 1e6:.2f}M parameters, mesh {dict(run.mesh.shape)}, "
          f"batch {batch_size}x{seq_len}, steps {start}->{total_steps}, workdir {workdir}", flush=True)
  bar = None
  if progress and is_main:
    from tqdm import tqdm  # pylint: disable=import-outside-toplevel
    bar = tqdm(total=total_steps, initial=start, desc="train", dynamic_ncols=True)

  history, evals, periodic = [], [], []
  profiling = False
  last_time, steps_done = None, 0
  try:
    for step in range(start, total_steps):
      if profile_steps and step == profile_steps[0]:
        jax.profiler.start_trace(os.path.join(workdir, "profile"))
        profiling = True
      batch = data_lib.global_batch(next(train_iter), run.mesh, batch_size, run.rules)
      state, metrics = run.train_step(state, batch)
      metrics = {k: np.asarray(v) for k, v in jax.device_get(metrics).items()}
      now = time.perf_counter()
      if last_time is not None:
        dt = now - last_time
        metrics["step_time_s"] = dt
        metrics["tokens_per_s"] = batch_size * seq_len / dt
        if peak:
          metrics["mfu"] = flops_per_step / dt / peak
      last_time = now
      scalars = {k: float(v) for k, v in metrics.items() if np.ndim(v) == 0}
      scalars["step"] = step + 1
      history.append(scalars)
      writer.write(step + 1, {k: v for k, v in scalars.items() if k != "step"}, prefix="train/")
      if profiling and step + 1 == profile_steps[1]:
        jax.profiler.stop_trace()
        profiling = False
      if bar is not None:
        bar.update(1)
        if (step + 1) % max(log_every, 1) == 0 or step + 1 == total_steps:
          bar.set_postfix_str(metrics_lib.console_line(scalars))
      if scalars["skipped_in_row"] >= max_nonfinite_in_row:
        raise NonFiniteError(
            f"step {step + 1}: the loss or gradients were not finite for {max_nonfinite_in_row} "
            f"steps in a row (skipped {int(scalars['skipped_steps'])} steps in total); these steps "
            "were not applied. Check the learning rate and warmup, the data at these steps (ids "
            "out of range, all-zero loss_weights), the compute dtype (try float32) and "
            "OptimizerOptions.clip_norm; the last checkpoint holds the last good state.")
      if eval_every and (step + 1) % eval_every == 0:
        eval_iter = make(eval_iter_factory, "eval")
        result = _evaluate(run, state.params, eval_iter, eval_batches, batch_size)
        result["step"] = step + 1
        evals.append(result)
        writer.write(step + 1, {k: v for k, v in result.items() if k != "step"}, prefix="eval/")
      if periodic_evals and periodic_eval_every and (step + 1) % periodic_eval_every == 0:
        from slm_jax.evaluation.periodic import run_hooks  # pylint: disable=import-outside-toplevel
        model = nnx.merge(run.graphdef, state.params)
        result = run_hooks(periodic_evals, model, cfg.vocab, step + 1)
        periodic.append(dict(result, step=step + 1))
        writer.write(step + 1, result, prefix="eval/")
      steps_done += 1
      if stop_after_steps is not None and steps_done >= stop_after_steps:
        return {"history": history, "eval": evals, "periodic_eval": periodic,
                "stopped_at": step + 1, "state": state}
      if ckpt.should_save(step + 1) or step + 1 == total_steps:
        writer.flush()   # metrics up to a checkpoint are on disk before it exists
        ckpt.save(step + 1, state, train_iter.get_state(), cfg.vocab)
  finally:
    if profiling:
      jax.profiler.stop_trace()
    if bar is not None:
      bar.close()
    ckpt.close()
    writer.close()
  if is_main:
    summary = (f"{metrics_lib.console_line(history[-1])}; " if history else
               "nothing to train (the checkpoint is already at TOTAL_STEPS; raise it or use a new "
               "workdir); ")
    print(f"slm-train: done at step {total_steps}; {summary}"
          f"checkpoints in {ckpt.directory}, TensorBoard logs in {workdir}/tensorboard", flush=True)
  return {"history": history, "eval": evals, "periodic_eval": periodic,
          "stopped_at": total_steps, "state": state}
