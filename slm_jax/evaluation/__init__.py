"""slm_jax.evaluation."""
