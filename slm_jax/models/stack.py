"""A stack of decoder blocks with stacked ("layers"-axis) parameters, applied by scan or unrolled.

Scanning keeps compile time flat in depth; the remat policy decides what the backward pass keeps.
The unrolled path reads the very same stacked parameters, so the two are interchangeable.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from slm_jax.models.block import DecoderBlock
from slm_jax.models.config import ModelConfig
from slm_jax.models.kv_cache import LayerView, StackCache
from slm_jax.models.remat import remat


class BlockStack(nnx.Module):
  """`num_layers` DecoderBlocks whose parameters carry a leading `layers` axis."""

  def __init__(self, cfg: ModelConfig, num_layers: int, *, rngs: nnx.Rngs):
    self.cfg, self.num_layers = cfg, num_layers
    if num_layers == 0:
      self.blocks = None
      return

    @nnx.vmap(in_axes=0, out_axes=0, transform_metadata={nnx.PARTITION_NAME: "layers"})
    def make_blocks(key):
      return DecoderBlock(cfg, rngs=nnx.Rngs(params=key))

    self.blocks = make_blocks(jax.random.split(rngs.params(), num_layers))

  def __call__(self, x_BLD, segment_ids_BL, positions_BL):
    if self.blocks is None:
      return x_BLD
    graphdef, stacked = nnx.split(self.blocks)

    def apply_layer(x, layer_state):
      return nnx.merge(graphdef, layer_state)(x, segment_ids_BL, positions_BL)

    apply_layer = remat(apply_layer, self.cfg.remat_policy)
    if self.cfg.scan_layers:
      x_BLD, _ = jax.lax.scan(lambda x, s: (apply_layer(x, s), None), x_BLD, stacked)
      return x_BLD
    for i in range(self.num_layers):
      x_BLD = apply_layer(x_BLD, jax.tree.map(lambda a, i=i: a[i], stacked))
    return x_BLD

  def forward_cached(self, x_BLD, segment_ids_BL, positions_BL, cache: StackCache,
                     kv_segment_ids_BS, kv_order_BS) -> tuple[jax.Array, StackCache]:
    """Generation: each layer writes its new keys into its slice of `cache` and attends the
    cache slots, whose (segment, order) are `kv_segment_ids_BS` / `kv_order_BS`."""
    if self.blocks is None:
      return x_BLD, cache
    graphdef, stacked = nnx.split(self.blocks)

    def apply_layer(x, layer):
      layer_state, k_BSGE, v_BSGE = layer
      view = LayerView(k_BSGE, v_BSGE, kv_segment_ids_BS, kv_order_BS)
      x, view = nnx.merge(graphdef, layer_state)(x, segment_ids_BL, positions_BL, view)
      return x, (view.k_BSGE, view.v_BSGE)

    if self.cfg.scan_layers:
      x_BLD, (k_YBSGE, v_YBSGE) = jax.lax.scan(apply_layer, x_BLD,
                                               (stacked, cache.k_YBSGE, cache.v_YBSGE))
      return x_BLD, StackCache(k_YBSGE, v_YBSGE)
    ks, vs = [], []
    for i in range(self.num_layers):
      layer = jax.tree.map(lambda a, i=i: a[i], (stacked, cache.k_YBSGE, cache.v_YBSGE))
      x_BLD, (k, v) = apply_layer(x_BLD, layer)
      ks.append(k)
      vs.append(v)
    return x_BLD, StackCache(jnp.stack(ks), jnp.stack(vs))
