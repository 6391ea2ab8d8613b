"""slm_jax.tools."""
