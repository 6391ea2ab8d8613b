"""seqio Task and Mixture registrations (importable as `slm_jax.tasks`)."""

# Importing registers the demo tasks and mixtures (lazily bound to corpus, vocabularies and
# tokenizers through gin; see tasks/demo.py).
from slm_jax.tasks import demo  # noqa: F401,E402
