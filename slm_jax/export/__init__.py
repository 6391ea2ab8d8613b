"""slm_jax.export."""
