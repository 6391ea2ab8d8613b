"""MFU's model-FLOPs formula against the parameters of the built model."""
import gin
import numpy as np
from flax import nnx

from slm_jax import configuration
from slm_jax.models import build
from slm_jax.train import metrics


def _matmul_params(model) -> tuple[int, int]:
  """(block kernels, output-head kernels) counted from the model's parameters."""
  blocks = heads = 0
  for path, var in nnx.to_flat_state(nnx.state(model, nnx.Param)):
    names = [str(p) for p in path]
    size = int(np.prod(var.get_value().shape))
    if names[0] == "heads" and names[-1] in ("kernel", "channel_kernel", "table"):
      heads += size                      # a tied head reads the embedding table
    elif names[-1] == "kernel":
      blocks += size
  return blocks, heads


def test_model_flops_match_the_built_models_matmul_parameters():
  for tied in (True, False):
    gin.clear_config()
    configuration.parse(["models/tiny.gin"], [
        "UnifiedVocab.speech_codebook_sizes = (64, 32, 32, 16)", f"ModelConfig.tie_embeddings = {tied}",
        "ModelConfig.text_tower_layers = 1", "ModelConfig.speech_tower_layers = 1"])
    cfg = build.config_from_gin()
    blocks, heads = _matmul_params(build.build_abstract(cfg))
    layers = cfg.num_layers + 2
    for seq_len in (0, 128):
      flops, formula = metrics.model_flops_per_token(cfg, seq_len)
      expected = 6 * (blocks + heads) + 6 * layers * cfg.num_heads * cfg.head_dim * seq_len
      assert flops == expected, formula
  gin.clear_config()
