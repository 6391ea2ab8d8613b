"""Atomic file writes: a reader sees the old file or the new one, never half of one.

Every writer of a file that another step or process reads (configs, vocab specs, tokenizer
models, manifests, exported configs, weights) goes through here. The temporary file gets a unique
name in the target's folder (`tempfile.mkstemp`), so two processes writing the same path never
share a temporary, and `os.replace` makes the switch atomic on POSIX file systems.

    atomic_write(path, "text")                 # str -> utf-8 text
    atomic_write(path, b"bytes")               # bytes
    with atomic_path(path) as tmp:             # for libraries that write to a path themselves
      library.save(tmp)
"""
from __future__ import annotations

import contextlib
import os
import tempfile
from typing import Iterator, Union


@contextlib.contextmanager
def atomic_path(path: str, suffix: str = "") -> Iterator[str]:
  """Yields a unique temporary path beside `path`; on success it replaces `path`, else vanishes.

  `suffix` keeps an extension for libraries that look at it (e.g. ".safetensors").
  """
  directory = os.path.dirname(os.path.abspath(path))
  os.makedirs(directory, exist_ok=True)
  fd, tmp = tempfile.mkstemp(dir=directory, prefix=f".{os.path.basename(path)}.", suffix=suffix)
  os.close(fd)
  try:
    yield tmp
    with open(tmp, "rb+") as f:  # the data is on disk before the name points at it
      os.fsync(f.fileno())
    os.replace(tmp, path)
  except BaseException:
    with contextlib.suppress(FileNotFoundError):
      os.remove(tmp)
    raise


def atomic_write(path: str, data: Union[str, bytes]) -> None:
  """Writes `data` (str as utf-8, or bytes) to `path` atomically."""
  payload = data.encode("utf-8") if isinstance(data, str) else bytes(data)
  with atomic_path(path) as tmp:
    with open(tmp, "wb") as f:
      f.write(payload)
