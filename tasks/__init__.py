"""seqio Task and Mixture registrations (importable as `slm_jax.tasks`)."""
