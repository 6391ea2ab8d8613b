"""Pre-norm decoder block: RMSNorm -> grouped-query attention (rotary) -> RMSNorm -> SwiGLU."""
from __future__ import annotations

import jax
from flax import nnx

from slm_jax.kernels import dispatch
from slm_jax.models.config import ModelConfig
from slm_jax.models.kv_cache import LayerView
from slm_jax.models.layers import DenseGeneral, RMSNorm, rotary
from slm_jax.sharding import constrain


class Attention(nnx.Module):
  """Grouped-query self-attention under the (segment, order) mask contract."""

  def __init__(self, cfg: ModelConfig, *, rngs: nnx.Rngs):
    self.cfg = cfg
    dt, pdt, std = cfg.jnp_dtype, cfg.jnp_param_dtype, cfg.init_std
    d, h, g, e = cfg.embed_dim, cfg.num_heads, cfg.num_kv_heads, cfg.head_dim
    bias = cfg.qkv_bias  # Qwen2-style q/k/v biases
    self.query = DenseGeneral((d,), (h, e), ("embed", "heads", "head_dim"), dtype=dt, param_dtype=pdt, std=std, rngs=rngs, use_bias=bias)
    self.key = DenseGeneral((d,), (g, e), ("embed", "kv_heads", "head_dim"), dtype=dt, param_dtype=pdt, std=std, rngs=rngs, use_bias=bias)
    self.value = DenseGeneral((d,), (g, e), ("embed", "kv_heads", "head_dim"), dtype=dt, param_dtype=pdt, std=std, rngs=rngs, use_bias=bias)
    self.out = DenseGeneral((h, e), (d,), ("heads", "head_dim", "embed"), dtype=dt, param_dtype=pdt,
                            std=std / (2 * max(cfg.num_layers, 1)) ** 0.5, rngs=rngs)

  def __call__(self, x_BLD, segment_ids_BL, positions_BL, cache: LayerView | None = None,
               order_BL=None):
    """Self-attention over the L positions; with `cache` (generation) the queries also attend the
    cache slots written before, and (out, (new keys, new values)) is returned for the caller to
    write into the cache. `order_BL`: the attention order (models/attention_order.py); None:
    `positions_BL`, strictly causal."""
    cfg = self.cfg
    q_BLHE = rotary(self.query(x_BLD), positions_BL, cfg.rope_theta)
    k_BLGE = rotary(self.key(x_BLD), positions_BL, cfg.rope_theta)
    v_BLGE = self.value(x_BLD)
    q_BLHE = constrain(q_BLHE, ("batch", "length", "act_heads", None))
    k_BLGE = constrain(k_BLGE, ("batch", "length", "act_kv_heads", None))
    v_BLGE = constrain(v_BLGE, ("batch", "length", "act_kv_heads", None))
    causal = order_BL is None
    order_BL = positions_BL if causal else order_BL
    if cache is None or cache.empty:   # keys are the same L positions as the queries (S = L)
      o_BLHE = dispatch.attention(q_BLHE, k_BLGE, v_BLGE, segment_ids_BL, order_BL,
                                  segment_ids_BL, order_BL, implementation=cfg.attention_impl,
                                  causal=causal)
    else:                              # keys: the cache slots written before, then the new ones
      o_BLHE = dispatch.cached_attention(q_BLHE, k_BLGE, v_BLGE, segment_ids_BL, order_BL,
                                         cache.k_BGSE, cache.v_BGSE, cache.segment_ids_BS,
                                         cache.order_BS, implementation=cfg.attention_impl)
    o_BLHE = constrain(o_BLHE, ("batch", "length", "act_heads", None))
    out_BLD = self.out(o_BLHE)
    return out_BLD if cache is None else (out_BLD, (k_BLGE, v_BLGE))


class SwiGLU(nnx.Module):
  def __init__(self, cfg: ModelConfig, *, rngs: nnx.Rngs):
    dt, pdt, std = cfg.jnp_dtype, cfg.jnp_param_dtype, cfg.init_std
    d, f = cfg.embed_dim, cfg.mlp_dim
    self.gate = DenseGeneral((d,), (f,), ("embed", "mlp"), dtype=dt, param_dtype=pdt, std=std, rngs=rngs)
    self.up = DenseGeneral((d,), (f,), ("embed", "mlp"), dtype=dt, param_dtype=pdt, std=std, rngs=rngs)
    self.down = DenseGeneral((f,), (d,), ("mlp", "embed"), dtype=dt, param_dtype=pdt,
                             std=std / (2 * max(cfg.num_layers, 1)) ** 0.5, rngs=rngs)

  def __call__(self, x_BLD):
    h_BLF = jax.nn.silu(self.gate(x_BLD)) * self.up(x_BLD)
    h_BLF = constrain(h_BLF, ("batch", "length", "act_mlp"))
    return self.down(h_BLF)


class DecoderBlock(nnx.Module):
  def __init__(self, cfg: ModelConfig, *, rngs: nnx.Rngs):
    dt, pdt = cfg.jnp_dtype, cfg.jnp_param_dtype
    self.attn_norm = RMSNorm(cfg.embed_dim, eps=cfg.norm_eps, dtype=dt, param_dtype=pdt, rngs=rngs)
    self.attn = Attention(cfg, rngs=rngs)
    self.mlp_norm = RMSNorm(cfg.embed_dim, eps=cfg.norm_eps, dtype=dt, param_dtype=pdt, rngs=rngs)
    self.mlp = SwiGLU(cfg, rngs=rngs)

  def __call__(self, x_BLD, segment_ids_BL, positions_BL, cache: LayerView | None = None,
               order_BL=None):
    """[B, L, D] -> [B, L, D]; with `cache` (generation) -> ([B, L, D], (new keys, values))."""
    attn = self.attn(self.attn_norm(x_BLD), segment_ids_BL, positions_BL, cache, order_BL)
    attn_BLD, new_kv = attn if cache is not None else (attn, None)
    x_BLD = x_BLD + attn_BLD
    x_BLD = x_BLD + self.mlp(self.mlp_norm(x_BLD))
    x_BLD = constrain(x_BLD, ("batch", "length", "act_embed"))
    return x_BLD if cache is None else (x_BLD, new_kv)
