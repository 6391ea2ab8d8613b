"""Attention implementations behind one dispatch function (`slm_jax.kernels.dispatch.attention`)."""
