"""slm_jax.data."""
