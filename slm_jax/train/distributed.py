"""Multi-process start-up: jax.distributed.initialize on TPU pods, SLURM and explicit clusters.

Call `initialize` before anything touches a JAX backend. With no explicit flags it reads the
launcher's environment (SLURM task count, the TPU pod's worker host list, Megascale multi-slice,
Open MPI) to decide whether several processes were launched, and if so lets
`jax.distributed.initialize()` detect the cluster itself; a single process needs no
initialization. A launcher that sets none of these needs the explicit flags.
"""
from __future__ import annotations

import logging
import os

import jax


def _looks_multiprocess() -> bool:
  """True when the environment says several processes were launched (TPU pod slice, SLURM)."""
  if int(os.environ.get("SLURM_NTASKS", "1")) > 1 and "SLURM_JOB_ID" in os.environ:
    return True
  hosts = os.environ.get("TPU_WORKER_HOSTNAMES", "")   # "host0,host1,..." on a multi-host slice
  if "," in hosts:
    return True
  # Megascale (multi-slice TPU) and MPI-style launchers.
  return "MEGASCALE_COORDINATOR_ADDRESS" in os.environ or int(
      os.environ.get("OMPI_COMM_WORLD_SIZE", "1")) > 1


def initialize(coordinator_address: str | None = None, num_processes: int | None = None,
               process_id: int | None = None, cpu_collectives: str = "gloo") -> None:
  """Initializes jax.distributed when this run spans several processes (no-op otherwise).

  Args:
    coordinator_address: "host:port" of process 0; with num_processes and process_id for clusters
      that JAX cannot detect (explicit launch, one command per host).
    cpu_collectives: collectives for multi-process CPU runs (tests and debugging): gloo or mpi.
  """
  explicit = coordinator_address is not None or num_processes is not None
  if not explicit and not _looks_multiprocess():
    return
  if explicit and (coordinator_address is None or num_processes is None or process_id is None):
    raise ValueError("multi-process launch needs all of --coordinator_address, --num_processes and "
                     "--process_id (or none of them on TPU pods / SLURM, where JAX detects them)")
  if (os.environ.get("JAX_PLATFORMS", "") or "").startswith("cpu"):
    jax.config.update("jax_cpu_collectives_implementation", cpu_collectives)
  if explicit:
    jax.distributed.initialize(coordinator_address=coordinator_address,
                               num_processes=num_processes, process_id=process_id)
  else:
    jax.distributed.initialize()
  logging.info("jax.distributed: process %d of %d, %d local / %d global devices",
               jax.process_index(), jax.process_count(), jax.local_device_count(),
               jax.device_count())
