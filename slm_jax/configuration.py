"""gin set-up shared by every entry point: search paths, parsing, clear errors, operative config.

Experiments compose a model file, a task/mixture file and a run file (T5X style, `include` and
`%MACROS`); `--gin_param` overrides single bindings. Files are looked up relative to the working
directory first, then to the package's gin files (`slm_jax/configs/` when installed from a wheel,
the repository's `configs/` in a checkout or editable install), so `--gin_file=models/demo.gin`
works from anywhere.
"""
from __future__ import annotations

import logging
import os
from typing import Sequence

import gin
from gin import resource_reader

from slm_jax.atomic_write import atomic_write
from slm_jax.errors import SlmError


def _configs_dir() -> str:
  """The gin files: slm_jax/configs/ in an installed wheel (setup.py ships the top-level configs/
  folder there), else the repository's configs/ beside the package (a checkout, `pip install -e`)."""
  package = os.path.dirname(os.path.abspath(__file__))
  installed = os.path.join(package, "configs")
  return installed if os.path.isdir(installed) else os.path.join(os.path.dirname(package), "configs")


CONFIGS_DIR = _configs_dir()
OPERATIVE_CONFIG_FILENAME = "operative_config.gin"


class ConfigError(SlmError, ValueError):
  """A gin file, binding or configured value is wrong; the message names it and the fix."""


def parse(gin_files: Sequence[str] = (), gin_params: Sequence[str] = (),
          finalize: bool = True) -> None:
  """Parses gin files and bindings; a typo is a ConfigError naming the file/binding."""
  _quiet_search_path_misses()
  _guard_package_path_reader()
  gin.add_config_file_search_path(os.getcwd())
  gin.add_config_file_search_path(CONFIGS_DIR)
  # Import modules whose configurables the files reference, so that bindings resolve.
  import slm_jax.registry  # noqa: F401  pylint: disable=import-outside-toplevel,unused-import
  resolved = [_resolve(f) for f in gin_files]
  try:
    gin.parse_config_files_and_bindings(resolved, list(gin_params), finalize_config=finalize)
  except (ValueError, KeyError, ImportError, SyntaxError) as e:
    raise ConfigError(
        f"could not parse gin config (files={list(gin_files)}, params={list(gin_params)}):\n  {e}\n"
        "Check the spelling of configurable and parameter names; `slm-train --help_gin` lists "
        "files under configs/.") from e


def _not_a_search_path_miss(record: logging.LogRecord) -> bool:
  """A logging filter: False (drop) for gin's "Path not found" records."""
  return not str(record.msg).startswith("Path not found")


def _quiet_search_path_misses() -> None:
  """gin logs an ERROR for every search path a file is not in, even when a later one has it."""
  root = logging.getLogger()
  if _not_a_search_path_miss not in root.filters:
    root.addFilter(_not_a_search_path_miss)


def _package_file_exists(config_path: str) -> bool:
  try:
    return resource_reader.system_path_file_exists(config_path)
  except TypeError:  # a namespace package (e.g. a `models/` folder on sys.path) has no origin
    return False


def _guard_package_path_reader() -> None:
  """gin's package-path reader crashes when an include such as 'models/demo.gin' names a folder
  that Python sees as a namespace package (gin 0.5); treat that as "not there" instead."""
  readers = gin.config._FILE_READERS  # pylint: disable=protected-access
  for i, (reader, exists) in enumerate(readers):
    if exists is resource_reader.system_path_file_exists:
      readers[i] = (reader, _package_file_exists)


def _resolve(path: str) -> str:
  for base in ("", os.getcwd(), CONFIGS_DIR):
    candidate = os.path.join(base, path) if base else path
    if os.path.exists(candidate):
      return candidate
  raise ConfigError(f"gin file {path!r} not found (looked in the working directory and {CONFIGS_DIR})")


def write_operative_config(directory: str) -> str:
  """Writes the operative config (every binding actually used) beside checkpoints."""
  path = os.path.join(directory, OPERATIVE_CONFIG_FILENAME)
  atomic_write(path, gin.operative_config_str())
  return path


def available_configs() -> list[str]:
  out = []
  for root, _, files in os.walk(CONFIGS_DIR):
    out += [os.path.relpath(os.path.join(root, f), CONFIGS_DIR) for f in files if f.endswith(".gin")]
  return sorted(out)
