"""Imports every module that defines gin configurables, so gin files can name them.

Kept to light imports (no TensorFlow); data/task modules that need TF register themselves when a
gin file imports them (`import slm_jax.tasks.demo`).
"""
# pylint: disable=unused-import
import slm_jax.unified_vocab  # noqa: F401
import slm_jax.kernels.dispatch  # noqa: F401
import slm_jax.models.config  # noqa: F401
import slm_jax.models.loss  # noqa: F401
import slm_jax.sharding  # noqa: F401
