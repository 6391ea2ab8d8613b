"""Runs independent jobs in this process and in spawned worker processes at the same time.

Each process takes the next job as soon as it finishes one, so jobs of unequal size still keep
every core busy. Spawned workers start fresh (no fork of a process that may run TensorFlow or JAX
threads) and run `setup` first, e.g. to import task modules and parse gin.
"""
from __future__ import annotations

import collections
import concurrent.futures
import multiprocessing
import threading
from typing import Callable, Optional, Sequence


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
    feeders = [threading.Thread(target=run, args=(lambda i: pool.submit(jobs[i]).result(),))
               for _ in range(helpers)]
    for t in feeders:
      t.start()
    run(lambda i: jobs[i]())
    for t in feeders:
      t.join()
  if errors:
    raise errors[0]
  return results
