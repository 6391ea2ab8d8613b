"""The base class of the project's known errors.

A known error is one a user can fix: a configuration typo, a checkpoint or vocabulary from another
model, a corrupt audio file, a missing input, a non-finite loss. Each subclasses `SlmError` (and
keeps its builtin base, e.g. `ValueError`, so callers that catch those still work). The command
line tools turn an `SlmError` into one clear message and exit code 2; anything else is a bug and
keeps its traceback.
"""


class SlmError(Exception):
  """A problem with the user's input, configuration or files; the message says what to do."""
