"""slm_jax.train."""
