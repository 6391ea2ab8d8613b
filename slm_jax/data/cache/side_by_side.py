"""Runs independent jobs in this process and in spawned worker processes at the same time.

Each process takes the next job as soon as it finishes one, so jobs of unequal size still keep
every core busy. Spawned workers start fresh (no fork of a process that may run TensorFlow or JAX
threads) and run `setup` first, e.g. to import task modules and parse gin.
"""
from __future__ import annotations

import collections
import concurrent.futures
import multiprocessing
import pickle
import sys
import threading
from typing import Callable, Optional, Sequence


def portable_error(error: BaseException) -> BaseException:
  """`error`, or an equal one whose class pickles, so it can travel back from a worker process.

  gin re-raises an error from a configured function as an instance of a subclass made at run
  time (to add its message), which pickle cannot find by name; that becomes an instance of the
  nearest class in its MRO that can be found by name, with the same message.
  """
  try:
    pickle.dumps(error)
    return error
  except Exception:  # pylint: disable=broad-except
    pass
  message = str(error)
  for cls in type(error).__mro__:
    if getattr(sys.modules.get(cls.__module__), cls.__qualname__, None) is not cls:
      continue
    try:
      candidate = cls(message)
      pickle.dumps(candidate)
      return candidate
    except Exception:  # pylint: disable=broad-except
      continue
  return RuntimeError(f"{type(error).__name__}: {message}")


def _run_job(job: Callable[[], object]) -> object:
  """Runs one job in a worker; its error comes back as `portable_error` makes it."""
  try:
    return job()
  except BaseException as e:  # pylint: disable=broad-except
    portable = portable_error(e)
    if portable is e:
      raise
    raise portable from None


def run_side_by_side(jobs: Sequence[Callable[[], object]], workers: int = 1,
                     setup: Optional[Callable[[], None]] = None) -> list:
  """Results of the zero-argument callables `jobs`, in order.

  With workers > 1, this process and workers - 1 spawned ones run them (jobs and `setup` must
  pickle: module-level functions or functools.partial of them). The first error stops handing
  out jobs and is raised once the running ones end.
  """
  helpers = min(workers, len(jobs)) - 1
  if helpers <= 0:
    return [job() for job in jobs]
  todo = collections.deque(range(len(jobs)))
  results: list = [None] * len(jobs)
  errors: list[BaseException] = []

  def take() -> Optional[int]:
    try:
      return None if errors else todo.popleft()
    except IndexError:
      return None

  def run(call: Callable[[int], object]) -> None:
    while (i := take()) is not None:
      try:
        results[i] = call(i)
      except BaseException as e:  # pylint: disable=broad-except
        errors.append(e)

  with concurrent.futures.ProcessPoolExecutor(
      helpers, mp_context=multiprocessing.get_context("spawn"), initializer=setup) as pool:
    in_worker = lambda i: pool.submit(_run_job, jobs[i]).result()  # noqa: E731
    feeders = [threading.Thread(target=run, args=(in_worker,)) for _ in range(helpers)]
    for t in feeders:
      t.start()
    run(lambda i: jobs[i]())
    for t in feeders:
      t.join()
  if errors:
    raise errors[0]
  return results
