"""atomic_write: a reader sees the old file or the new one; failures and races lose nothing."""
import multiprocessing
import os

import pytest

from slm_jax.atomic_write import atomic_path, atomic_write


def test_writes_text_and_bytes(tmp_path):
  path = str(tmp_path / "sub" / "a.json")
  atomic_write(path, "héllo")
  assert open(path, encoding="utf-8").read() == "héllo"
  atomic_write(path, b"\x00\x01")
  assert open(path, "rb").read() == b"\x00\x01"
  assert os.listdir(tmp_path / "sub") == ["a.json"]  # no temporary left behind


def test_failure_keeps_the_old_file(tmp_path):
  path = str(tmp_path / "model.bin")
  atomic_write(path, b"good")
  with pytest.raises(RuntimeError):
    with atomic_path(path) as tmp:
      with open(tmp, "wb") as f:
        f.write(b"half")
      raise RuntimeError("writer died")
  assert open(path, "rb").read() == b"good"
  assert os.listdir(tmp_path) == ["model.bin"]


def test_temporary_keeps_suffix_and_is_unique(tmp_path):
  path = str(tmp_path / "w.safetensors")
  with atomic_path(path, suffix=".safetensors") as a, atomic_path(path, suffix=".safetensors") as b:
    assert a != b and a.endswith(".safetensors")
    for p in (a, b):
      open(p, "wb").write(p.encode())
  assert open(path, "rb").read() in (a.encode(), b.encode())


def _writer(path, payload, n):
  for _ in range(n):
    atomic_write(path, payload)


def test_two_processes_never_interleave(tmp_path):
  path = str(tmp_path / "shared.txt")
  payloads = [b"a" * 200_000, b"b" * 300_000]
  procs = [multiprocessing.get_context("spawn").Process(target=_writer, args=(path, p, 20))
           for p in payloads]
  for p in procs:
    p.start()
  for p in procs:
    p.join()
    assert p.exitcode == 0
  assert open(path, "rb").read() in payloads
  assert os.listdir(tmp_path) == ["shared.txt"]
