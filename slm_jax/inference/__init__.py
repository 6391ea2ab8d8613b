"""slm_jax.inference."""
