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
from slm_jax.models.kv_cache import LayerView, StackCache, write_new_keys
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

  def __call__(self, x_BLD, segment_ids_BL, positions_BL, order_BL=None):
    """order_BL: the attention order (models/attention_order.py); None: positions, causal."""
    if self.blocks is None:
      return x_BLD
    graphdef, stacked = nnx.split(self.blocks)

    def apply_layer(x, layer_state):
      return nnx.merge(graphdef, layer_state)(x, segment_ids_BL, positions_BL, None, order_BL)

    apply_layer = remat(apply_layer, self.cfg.remat_policy)
    if self.cfg.scan_layers:
      x_BLD, _ = jax.lax.scan(lambda x, s: (apply_layer(x, s), None), x_BLD, stacked)
      return x_BLD
    for i in range(self.num_layers):
      x_BLD = apply_layer(x_BLD, jax.tree.map(lambda a, i=i: a[i], stacked))
    return x_BLD

  def forward_cached(self, x_BLD, segment_ids_BL, positions_BL, cache: StackCache,
                     kv_segment_ids_BS, kv_order_BS, empty: bool = False, order_BL=None
                     ) -> tuple[jax.Array, StackCache]:
    """Generation: each layer attends its cache slice (slots whose (segment, order) are
    `kv_segment_ids_BS` / `kv_order_BS`, written before this call) and the new positions; all
    layers' new keys are written into the stacked cache once, after the layers.
    `empty` (static): nothing is cached yet (a fresh prefill), so the cache is not read."""
    if self.blocks is None:
      return x_BLD, cache
    graphdef, stacked = nnx.split(self.blocks)

    def apply_layer(x, layer):
      layer_state, k_BGSE, v_BGSE = layer
      view = LayerView(k_BGSE, v_BGSE, kv_segment_ids_BS, kv_order_BS, empty)
      return nnx.merge(graphdef, layer_state)(x, segment_ids_BL, positions_BL, view, order_BL)

    if empty:   # the cache is not read: scan over the parameters only
      dummy = lambda: jnp.zeros((self.num_layers, 0, 0, 0, 0), cache.k_YBGSE.dtype)  # noqa: E731
      xs = (stacked, dummy(), dummy())
    else:
      xs = (stacked, cache.k_YBGSE, cache.v_YBGSE)
    if self.cfg.scan_layers:
      x_BLD, (k_YBLGE, v_YBLGE) = jax.lax.scan(apply_layer, x_BLD, xs)
    else:
      ks, vs = [], []
      for i in range(self.num_layers):
        x_BLD, (k, v) = apply_layer(x_BLD, jax.tree.map(lambda a, i=i: a[i], xs))
        ks.append(k)
        vs.append(v)
      k_YBLGE, v_YBLGE = jnp.stack(ks), jnp.stack(vs)
    return x_BLD, write_new_keys(cache, k_YBLGE, v_YBLGE, positions_BL)
