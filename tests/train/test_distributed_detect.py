"""When slm-train initializes jax.distributed without explicit flags: the launcher's environment."""
import pytest

from slm_jax.train import distributed

_VARS = ("SLURM_NTASKS", "SLURM_JOB_ID", "TPU_WORKER_HOSTNAMES", "MEGASCALE_COORDINATOR_ADDRESS",
         "OMPI_COMM_WORLD_SIZE")


@pytest.mark.parametrize("env,multi", [
    ({}, False),
    ({"SLURM_JOB_ID": "7", "SLURM_NTASKS": "16"}, True),
    ({"SLURM_JOB_ID": "7", "SLURM_NTASKS": "1"}, False),
    ({"SLURM_NTASKS": "16"}, False),                       # not inside a SLURM job
    ({"TPU_WORKER_HOSTNAMES": "t1v-0,t1v-1,t1v-2,t1v-3"}, True),
    ({"TPU_WORKER_HOSTNAMES": "localhost"}, False),        # single-host TPU VM
    ({"MEGASCALE_COORDINATOR_ADDRESS": "10.0.0.2:8080"}, True),
    ({"OMPI_COMM_WORLD_SIZE": "4"}, True),
])
def test_multiprocess_detection_from_the_launcher_environment(monkeypatch, env, multi):
  for name in _VARS:
    monkeypatch.delenv(name, raising=False)
  for name, value in env.items():
    monkeypatch.setenv(name, value)
  assert distributed._looks_multiprocess() is multi  # pylint: disable=protected-access


def test_single_process_is_a_no_op_and_partial_flags_are_clear(monkeypatch):
  for name in _VARS:
    monkeypatch.delenv(name, raising=False)
  distributed.initialize()   # nothing launched: returns without touching jax.distributed
  with pytest.raises(ValueError, match="--process_id"):
    distributed.initialize(coordinator_address="127.0.0.1:1234", num_processes=2)
