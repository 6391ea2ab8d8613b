"""Fixtures for the tools' and bench scripts' tests."""
import importlib.util
import os

import pytest


@pytest.fixture(name="load_bench")
def fixture_load_bench(repo_root):
  """load_bench(name) -> the module bench/NAME.py (the bench folder is not a package)."""
  def load(name):
    spec = importlib.util.spec_from_file_location(f"bench_{name}",
                                                  os.path.join(repo_root, "bench", f"{name}.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
  return load
