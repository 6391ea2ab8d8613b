"""How the command line tools end on a known error: one clear message and exit code 2.

A known error is an `slm_jax.errors.SlmError` (configuration, checkpoint or vocabulary mismatch,
bad audio, non-finite loss, ...) or a missing input file. `run_main` prints it as
`<prog>: error: <message>` on stderr, the way argparse reports a bad flag, and returns 2; any
other exception is a bug and keeps its traceback.
"""
from __future__ import annotations

import re
import sys
from typing import Callable

from slm_jax.errors import SlmError

USAGE_EXIT_CODE = 2
KNOWN_ERRORS = (SlmError, FileNotFoundError)
# gin appends "  In call to configurable 'name' (<function name at 0x...>)" to errors raised inside
# a configurable; the user's message is complete without it.
_GIN_CONTEXT = re.compile(r"\n\s*In call to configurable '[^']*' \(<[^>]*>\)")


def describe(error: BaseException) -> str:
  """The message of a known error (a bare FileNotFoundError says which file, without errno)."""
  if isinstance(error, FileNotFoundError) and not isinstance(error, SlmError) and error.filename:
    return f"{error.strerror or 'not found'}: {error.filename}"
  return _GIN_CONTEXT.sub("", str(error)).strip() or type(error).__name__


def run_main(prog: str, main: Callable[[], int | None]) -> int:
  """Runs `main()` and returns its exit code; a known error becomes a message and code 2."""
  try:
    return int(main() or 0)
  except KNOWN_ERRORS as e:
    print(f"{prog}: error: {describe(e)}", file=sys.stderr)
    return USAGE_EXIT_CODE

