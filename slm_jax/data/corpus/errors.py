"""The error of the corpus builders when a Debian package they need is not installed.

fortunes (text), flite and espeak-ng (speech) and pocketsphinx-testdata (real test speech) come
from Debian packages; each module that reads one says which package to install.
"""
from slm_jax.errors import SlmError


class MissingPackageError(SlmError, RuntimeError):
  """A Debian package the demo corpus needs is not installed."""


def missing_package(what: str, package: str) -> MissingPackageError:
  return MissingPackageError(
      f"{what} not found. Install the Debian package: `sudo apt-get install {package}` "
      "(or run `make apt` / `make setup` in the repository root).")
