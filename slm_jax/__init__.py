"""slm_jax: JAX-native training of speech-text language models."""

__version__ = "0.1.0"
