"""Zipper (Zayats et al., 2024): two unimodal decoders fused by gated cross-attention.

A text tower and a speech tower, each a full decoder (`SpeechTextLM` with its own depth, width and
heads, `ModelConfig.tower(name)`), read their own positions of the unified stream
(`data/zipper_streams.py`). After every `cross_every`-th layer a tower attends the other tower's
hidden states at the same relative depth through a gated cross-attention (learned scalar gate,
tanh, initialized at 0: a pretrained tower starts unchanged); its key/value projections map the
other tower's width onto this tower's heads, its output projection back to this tower's width.
Each tower applies a residual MLP + ReLU to its embeddings (output projection initialized at 0).

Cross-attention follows the (segment, order) contract with the unified position as order: a
position of one tower sees the other tower's positions of its document strictly before it in the
interleaved row, so ASR, TTS and interleaved rows are causal across the streams.

When the towers share one head layout (heads, kv heads, head dim), training runs each layer's two
self-attentions as one attention over the row, and the two cross-attentions of a fusion point as
another (`paired_block`, `paired_cross_attention`): the streams are aligned and disjoint, so each
position holds its own tower's query, key and value, and segment ids keep each query to the keys
its own attention would see. Same numbers, half the [B, H, L, S] score work.

Which tower's hidden state predicts the next token is the tower of the input position: `heads`
selects per position between the two towers' heads (both over the unified vocabulary; the speech
tower's also over speech channels 1..K-1; the optional CTC head, `ModelConfig.asr_ctc`, is the
speech tower's). Parameter paths: `text/...`, `speech/...` (each laid
out like a shared-architecture model, so a tower restores from such a checkpoint and the text tower
takes the Hugging Face warm start), `text_input/`, `speech_input/` (input MLPs), `text_cross/i/`,
`speech_cross/i/` (the cross-attentions inside each tower). Each tower's parameters (backbone, input
MLP, cross-attentions) carry its own logical axes (`text_embed`, `speech_mlp`, ...;
models/zipper_axes.py), so the rule table can shard the two towers differently.
"""
from __future__ import annotations

import collections
import functools
import math

import flax.struct
import jax
import jax.numpy as jnp
from flax import nnx

from slm_jax.data.zipper_streams import ZipperStreams, is_speech_tower, zipper_streams
from slm_jax.kernels import dispatch
from slm_jax.models.config import ModelConfig
from slm_jax.models.kv_cache import LayerView, write_new_keys
from slm_jax.models.layers import DenseGeneral, RMSNorm, param, rotary
from slm_jax.models.lm import SpeechTextLM
from slm_jax.models.remat import remat
from slm_jax.models.zipper_axes import name_tower_axes
from slm_jax.models.zipper_cache import SHARED, ZipperCache, write_cross_keys, write_zipper_slots
from slm_jax.models.zipper_config import TOWERS
from slm_jax.sharding import constrain


def other(tower: str) -> str:
  return "speech" if tower == "text" else "text"


class InputMLP(nnx.Module):
  """x + W_down relu(W_up x); W_down starts at zero (identity at init)."""

  def __init__(self, cfg: ModelConfig, *, rngs: nnx.Rngs):
    dt, pdt = cfg.jnp_dtype, cfg.jnp_param_dtype
    self.up = DenseGeneral((cfg.embed_dim,), (cfg.mlp_dim,), ("embed", "mlp"), dtype=dt,
                           param_dtype=pdt, std=cfg.init_std, rngs=rngs)
    self.down = DenseGeneral((cfg.mlp_dim,), (cfg.embed_dim,), ("mlp", "embed"), dtype=dt,
                             param_dtype=pdt, std=0.0, rngs=rngs)

  def __call__(self, x_BLD):
    h_BLF = constrain(jax.nn.relu(self.up(x_BLD)), ("batch", "length", "act_mlp"))
    return x_BLD + self.down(h_BLF)


class GatedCrossAttention(nnx.Module):
  """Queries of one tower (width D, its heads) over keys/values projected from the other tower's
  hidden states (width `source_dim`); x + tanh(gate) * out. Rotary on the unified positions."""

  def __init__(self, cfg: ModelConfig, source_dim: int, *, rngs: nnx.Rngs):
    self.cfg = cfg
    dt, pdt, std = cfg.jnp_dtype, cfg.jnp_param_dtype, cfg.init_std
    d, h, g, e = cfg.embed_dim, cfg.num_heads, cfg.num_kv_heads, cfg.head_dim
    self.query_norm = RMSNorm(d, eps=cfg.norm_eps, dtype=dt, param_dtype=pdt, rngs=rngs)
    self.source_norm = RMSNorm(source_dim, eps=cfg.norm_eps, dtype=dt, param_dtype=pdt, rngs=rngs)
    self.query = DenseGeneral((d,), (h, e), ("embed", "heads", "head_dim"), dtype=dt, param_dtype=pdt, std=std, rngs=rngs)
    self.key = DenseGeneral((source_dim,), (g, e), ("embed", "kv_heads", "head_dim"), dtype=dt, param_dtype=pdt, std=std, rngs=rngs)
    self.value = DenseGeneral((source_dim,), (g, e), ("embed", "kv_heads", "head_dim"), dtype=dt, param_dtype=pdt, std=std, rngs=rngs)
    self.out = DenseGeneral((h, e), (d,), ("heads", "head_dim", "embed"), dtype=dt, param_dtype=pdt, std=std, rngs=rngs)
    self.gate = param(rngs, (), (), pdt, init="zeros")

  def keys(self, source_BLD, order_BL):
    """The other tower's hidden states -> (keys, values) [B, L, G, E]."""
    s_BLD = self.source_norm(source_BLD)
    k_BLGE = rotary(self.key(s_BLD), order_BL, self.cfg.rope_theta)
    v_BLGE = self.value(s_BLD)
    return (constrain(k_BLGE, ("batch", "length", "act_kv_heads", None)),
            constrain(v_BLGE, ("batch", "length", "act_kv_heads", None)))

  def queries(self, x_BLD, order_BL):
    """This tower's hidden states -> queries [B, L, H, E]."""
    q_BLHE = rotary(self.query(self.query_norm(x_BLD)), order_BL, self.cfg.rope_theta)
    return constrain(q_BLHE, ("batch", "length", "act_heads", None))

  def gated(self, x_BLD, o_BLHE):
    """x + tanh(gate) * out(attention output)."""
    o_BLHE = constrain(o_BLHE, ("batch", "length", "act_heads", None))
    gate = jnp.tanh(self.gate[...].astype(jnp.float32)).astype(x_BLD.dtype)
    return constrain(x_BLD + gate * self.out(o_BLHE), ("batch", "length", "act_embed"))

  def __call__(self, x_BLD, q_segment_ids, q_order, k_BSGE, v_BSGE, kv_segment_ids, kv_order,
               causal: bool = False):
    """`causal` (static): keys and queries are the same row's positions (L = S, both streams
    aligned with the row), so within a segment the order increases with the index on both sides
    and the dispatch may skip key blocks after the query block (the results are the same)."""
    o_BLHE = dispatch.attention(self.queries(x_BLD, q_order), k_BSGE, v_BSGE, q_segment_ids,
                                q_order, kv_segment_ids, kv_order,
                                implementation=self.cfg.attention_impl, causal=causal)
    return self.gated(x_BLD, o_BLHE)


def paired_segment_ids(s: ZipperStreams):
  """Segment ids under which one attention over the row does both towers' cross-attentions:
  queries 2 * segment + (speech position), keys 2 * segment + (text position) (0: padding), so a
  query sees exactly the keys of its document held by the other tower."""
  seg_BL = s.text_segment_ids + s.speech_segment_ids
  speech_BL = s.speech_BL.astype(seg_BL.dtype)
  live_BL = seg_BL > 0
  return (jnp.where(live_BL, 2 * seg_BL + speech_BL, 0),
          jnp.where(live_BL, 2 * seg_BL + 1 - speech_BL, 0))


def towers_pair(text: ModelConfig, speech: ModelConfig) -> bool:
  """The towers' attentions can run as one (`paired_block`, `paired_cross_attention`): the same
  head layout, rotary, kernel and dtype."""
  return all(getattr(text, f) == getattr(speech, f) for f in
             ("num_heads", "num_kv_heads", "head_dim", "rope_theta", "attention_impl", "dtype"))


def paired_cross_queries(mods: dict, s: ZipperStreams, x: dict):
  """Position i's query of tower(i)'s cross-attention [B, L, H, E] (see `paired_cross_attention`)."""
  speech_BL11 = s.speech_BL[:, :, None, None]
  t, sp = mods["text"], mods["speech"]
  q_BLHE = jnp.where(speech_BL11, sp.query(sp.query_norm(x["speech"])),
                     t.query(t.query_norm(x["text"])))
  return constrain(rotary(q_BLHE, s.order, t.cfg.rope_theta), ("batch", "length", "act_heads", None))


def paired_cross_keys(mods: dict, s: ZipperStreams, sources: dict):
  """Position i's key / value [B, L, G, E] of the other tower's cross-attention, projected from
  tower(i)'s state: the text tower's keys are read at speech positions (from the speech tower's
  state), the speech tower's at text positions."""
  speech_BL11 = s.speech_BL[:, :, None, None]
  t, sp = mods["text"], mods["speech"]
  st_BLD, ss_BLD = t.source_norm(sources["text"]), sp.source_norm(sources["speech"])
  k_BLGE = rotary(jnp.where(speech_BL11, t.key(st_BLD), sp.key(ss_BLD)), s.order, t.cfg.rope_theta)
  v_BLGE = jnp.where(speech_BL11, t.value(st_BLD), sp.value(ss_BLD))
  return (constrain(k_BLGE, ("batch", "length", "act_kv_heads", None)),
          constrain(v_BLGE, ("batch", "length", "act_kv_heads", None)))


def paired_cross_out(mods: dict, s: ZipperStreams, x: dict, o_BLHE) -> dict:
  """Each tower's gated output of the paired attention output; a tower's positions outside its
  stream see no key in its own cross-attention: output zero."""
  speech_BL11 = s.speech_BL[:, :, None, None]
  return {"text": mods["text"].gated(x["text"], jnp.where(speech_BL11, 0, o_BLHE)),
          "speech": mods["speech"].gated(x["speech"], jnp.where(speech_BL11, o_BLHE, 0))}


def paired_cross_attention(mods: dict, s: ZipperStreams, x: dict, sources: dict) -> dict:
  """Both towers' cross-attentions at one fusion point as a single attention over the row.

  The streams are aligned and disjoint: position i holds tower(i)'s query and the key of the
  other tower's cross-attention (projected from tower(i)'s state, the source it reads). Under
  `paired_segment_ids` each query sees the same keys as in its own tower's cross-attention, so
  the results equal the two separate attentions while the [B, H, L, S] score work is done once.
  `mods`, `x`, `sources`: per tower its cross-attention, its hidden state, the state it reads."""
  q_BLHE = paired_cross_queries(mods, s, x)
  k_BLGE, v_BLGE = paired_cross_keys(mods, s, sources)
  q_seg_BL, kv_seg_BL = paired_segment_ids(s)
  o_BLHE = dispatch.attention(q_BLHE, k_BLGE, v_BLGE, q_seg_BL, s.order, kv_seg_BL, s.order,
                              implementation=mods["text"].cfg.attention_impl, causal=True)
  return paired_cross_out(mods, s, x, o_BLHE)


def paired_block(blocks: dict, s: ZipperStreams, x: dict, cache: LayerView | None = None):
  """One decoder layer of both towers (`models/block.py`'s DecoderBlock, per tower `blocks`,
  states `x`) with the two self-attentions as one attention over the row.

  Position i holds tower(i)'s query, key and value (rotary at its stream position); segment ids
  2 * segment + (speech position) keep each tower's positions to themselves, and the unified
  order is causal within a stream as the stream position is. Each tower's positions see the same
  keys as in its own self-attention, and its other positions (no key visible there) get zero, so
  the results equal the two blocks run separately while the score work is done once. Everything
  else (norms, projections, MLPs) is each tower's own, over the row as before.

  With `cache` (generation: both towers' keys in one cache layer, slot p holding tower(p)'s key,
  its segment ids paired the same way and its order the stream position) the queries also attend
  the slots written before; returns (states, (new keys, new values)) as DecoderBlock does."""
  speech_BL = s.speech_BL
  speech_BL11 = speech_BL[:, :, None, None]
  a = {t: blocks[t].attn for t in TOWERS}
  cfg = a["text"].cfg
  n = {t: blocks[t].attn_norm(x[t]) for t in TOWERS}
  pick = lambda proj: jnp.where(speech_BL11, getattr(a["speech"], proj)(n["speech"]),  # noqa: E731
                                getattr(a["text"], proj)(n["text"]))
  positions_BL = s.text_positions + s.speech_positions      # each is 0 off its own stream
  q_BLHE = constrain(rotary(pick("query"), positions_BL, cfg.rope_theta),
                     ("batch", "length", "act_heads", None))
  k_BLGE = constrain(rotary(pick("key"), positions_BL, cfg.rope_theta),
                     ("batch", "length", "act_kv_heads", None))
  v_BLGE = constrain(pick("value"), ("batch", "length", "act_kv_heads", None))
  seg_BL = s.text_segment_ids + s.speech_segment_ids
  seg_BL = jnp.where(seg_BL > 0, 2 * seg_BL + speech_BL.astype(seg_BL.dtype), 0)
  if cache is None or cache.empty:
    o_BLHE = dispatch.attention(q_BLHE, k_BLGE, v_BLGE, seg_BL, s.order, seg_BL, s.order,
                                implementation=cfg.attention_impl, causal=True)
  else:
    o_BLHE = dispatch.cached_attention(q_BLHE, k_BLGE, v_BLGE, seg_BL, positions_BL, cache.k_BGSE,
                                       cache.v_BGSE, cache.segment_ids_BS, cache.order_BS,
                                       implementation=cfg.attention_impl)
  o_BLHE = constrain(o_BLHE, ("batch", "length", "act_heads", None))
  out = {}
  for t, mine_BL11 in (("text", ~speech_BL11), ("speech", speech_BL11)):
    blk = blocks[t]
    y_BLD = x[t] + a[t].out(jnp.where(mine_BL11, o_BLHE, 0))
    y_BLD = y_BLD + blk.mlp(blk.mlp_norm(y_BLD))
    out[t] = constrain(y_BLD, ("batch", "length", "act_embed"))
  return out if cache is None else (out, (k_BLGE, v_BLGE))


@flax.struct.dataclass
class ZipperHidden:
  """Final hidden states of both towers at every position of the row, and which one holds it."""
  text: jax.Array        # [B, L, D_text]
  speech: jax.Array      # [B, L, D_speech]
  speech_BL: jax.Array   # bool [B, L]: the position belongs to the speech tower

  def __getitem__(self, index):
    """Indexes the leading (batch, length) axes of every leaf (h[:, -1], h[:, :-1], ...)."""
    return jax.tree.map(lambda x: x[index], self)


class ZipperHeads:
  """The output heads seen from outside: each position scored by its own tower's heads."""

  def __init__(self, text_heads, speech_heads):
    self.text, self.speech = text_heads, speech_heads

  def logits(self, h: ZipperHidden):
    return jnp.where(h.speech_BL[..., None], self.speech.logits(h.speech), self.text.logits(h.text))

  def channel_logits(self, h: ZipperHidden, frame_NK=None):
    """Speech channels 1..K-1 come from the speech tower (the tower of speech positions)."""
    return self.speech.channel_logits(h.speech, frame_NK)

  def choose_channels(self, h: ZipperHidden, level0_N, pick):
    return self.speech.choose_channels(h.speech, level0_N, pick)

  def ctc_logits(self, h: ZipperHidden):
    """The auxiliary CTC head (models/ctc.py) reads the speech tower's hidden states; the loss
    and CTC decoding take them at speech frames only, which the speech tower holds."""
    return self.speech.ctc_logits(h.speech)


@functools.lru_cache(maxsize=None)
def fusion_plan(depths: tuple[int, int], every: tuple[int, int]):
  """The static order of work: ("run", tower, i, j) runs layers [i, j) of a tower; ("cross",
  tower, c, depth) applies the tower's c-th cross-attention to the other tower's hidden state
  after `depth` layers (taken before that tower's own cross-attention at that depth).

  Tower t's c-th cross-attention follows its layer (c + 1) * every[t] and reads the other tower at
  the same relative depth, floor((c + 1) * every[t] * depth_other / depth_t). Returns (plan,
  needed: per tower, the depths the other tower reads)."""
  n = dict(zip(TOWERS, depths))
  k = dict(zip(TOWERS, every))
  crosses = {t: [(c, (c + 1) * k[t], (c + 1) * k[t] * n[other(t)] // n[t])
                 for c in range(n[t] // k[t] if k[t] else 0)] for t in TOWERS}
  needed = {t: sorted({src for _, _, src in crosses[other(t)]}) for t in TOWERS}
  depth, nxt, reached = {t: 0 for t in TOWERS}, {t: 0 for t in TOWERS}, {t: {0} for t in TOWERS}
  plan = []
  while any(depth[t] < n[t] or nxt[t] < len(crosses[t]) for t in TOWERS):
    progressed = False
    for t in TOWERS:
      while True:
        if nxt[t] < len(crosses[t]) and crosses[t][nxt[t]][1] == depth[t]:
          c, _, src = crosses[t][nxt[t]]
          if src not in reached[other(t)]:
            break
          plan.append(("cross", t, c, src))
          nxt[t] += 1
        elif depth[t] < n[t]:
          stops = [d for d in [x[1] for x in crosses[t]] + needed[t] + [n[t]] if d > depth[t]]
          stop = min(stops)
          plan.append(("run", t, depth[t], stop))
          depth[t] = stop
          reached[t].add(stop)
        else:
          break
        progressed = True
    if not progressed:
      raise AssertionError(f"fusion plan deadlock: depths {depths}, every {every}")
  return tuple(plan), needed


@functools.lru_cache(maxsize=None)
def fusion_periods(depths: tuple[int, int], every: tuple[int, int]) -> int:
  """How many identical periods the fusion plan splits into (1: none), each running depth / P
  layers of each tower and its crosses; training scans over the periods, so the step is a loop
  (as the shared model's layer scan is) rather than one straight-line program per layer.

  A period's plan is `fusion_plan(depths // P, every)`: its crosses shifted by whole periods must
  be exactly the full plan's, and none may read a tower's state at the start of the period (the
  carry is the state after the previous period's last crosses, not the one before them)."""
  counts = [n // k if k else 0 for n, k in zip(depths, every)]
  full = {op[1:] for op in fusion_plan(depths, every)[0] if op[0] == "cross"}
  g = math.gcd(*depths, *counts)
  for p in range(g, 1, -1):
    if g % p:
      continue
    sub = tuple(n // p for n in depths)
    plan, needed = fusion_plan(sub, every)
    crosses = [op[1:] for op in plan if op[0] == "cross"]
    per = {t: sum(1 for c in crosses if c[0] == t) for t in TOWERS}
    shifted = {(t, c + m * per[t], src + m * sub[1 - TOWERS.index(t)])
               for m in range(p) for t, c, src in crosses}
    if shifted == full and all(0 not in needed[t] for t in TOWERS):
      return p
  return 1


def cross_remat_policy(policy: str) -> str:
  """The remat policy of the cross-attentions given the decoder's: recomputed whole in the backward
  pass unless the decoder saves everything ("none"). What a dots-saving policy would keep of one is
  mostly its attention scores, [B, H, L, S] like a self-attention's, while recomputing it costs about
  one attention forward pass (bench/zipper.py: less peak memory at the same step time)."""
  return "none" if policy == "none" else "full"


def pair_towers(plan) -> tuple:
  """The plan with ops of the two towers merged where they can run together: two cross-attentions
  into one ("cross2", {tower: (c, depth)}) op, runs of the same layers [i, j) into ("run2", i, j).

  An op of tower t pairs with the next op of the other tower o when only ops of t lie between
  them; the o op then moves up to the t op. That is safe: a run reads and writes its own tower's
  state, and a cross-attention writes its own and reads a saved state of the other tower, so the o
  op commutes with the t ops it passes unless it is a cross-attention reading a state of t that
  they (or the t op itself) save, which is checked."""
  plan, out = list(plan), []
  reached = {t: {0} for t in TOWERS}       # depths each tower's emitted runs have saved
  while plan:
    op = plan.pop(0)
    t = op[1]
    k = next((n for n, later in enumerate(plan) if later[1] != t), None)
    mate = None if k is None else plan[k]
    if mate is not None and mate[0] == op[0] == "run" and mate[2:] == op[2:]:
      out.append(("run2",) + op[2:])
      del plan[k]
      for u in TOWERS:
        reached[u].add(op[3])
      continue
    if mate is not None and mate[0] == op[0] == "cross" and mate[3] in reached[t]:
      out.append(("cross2", {t: op[2:], mate[1]: mate[2:]}))
      del plan[k]
      continue
    if op[0] == "run":
      reached[t].add(op[3])
    out.append(op)
  return tuple(out)


def run_plan(plan, needed, h: dict, layers, cross, layers2=None, cross2=None) -> dict:
  """Executes a fusion plan from the towers' states `h`: `layers(t, i, j, x)` runs layers [i, j)
  of tower t, `cross(t, c, x, source)` its c-th cross-attention over the other tower's state;
  the merged ops of `pair_towers`: `layers2(i, j, x)` runs layers [i, j) of both towers,
  `cross2(cs, x, sources)` both towers' cross-attentions (per tower: c, state, source)."""
  h = dict(h)
  saved = {t: ({0: h[t]} if 0 in needed[t] else {}) for t in TOWERS}
  for op in plan:
    if op[0] in ("run", "run2"):
      if op[0] == "run":
        _, t, i, j = op
        h[t] = layers(t, i, j, h[t])
        ran = (t,)
      else:
        _, i, j = op
        h = layers2(i, j, h)
        ran = TOWERS
      for t in ran:
        if j in needed[t]:
          saved[t][j] = h[t]
    elif op[0] == "cross":
      _, t, c, src = op
      h[t] = cross(t, c, h[t], saved[other(t)][src])
    else:
      cs = {t: c for t, (c, _) in op[1].items()}
      h = cross2(cs, h, {t: saved[other(t)][src] for t, (_, src) in op[1].items()})
  return h


class ZipperLM(nnx.Module):
  """The Zipper speech-text LM (see the module docstring). `__call__` returns a `ZipperHidden`;
  `heads.logits` / `heads.channel_logits` take it like the shared model's hidden states."""

  def __init__(self, cfg: ModelConfig, *, rngs: nnx.Rngs):
    self.cfg = cfg
    # Training runs the two towers' self-attentions of a layer, and their cross-attentions of a
    # fusion point, as one attention each where the head layouts match (`towers_pair`); False:
    # one attention per tower (the same numbers; tests compare the two).
    self.paired = True
    tc, sc = cfg.tower("text"), cfg.tower("speech")
    self.text = SpeechTextLM(tc, rngs=rngs)
    self.text.towers.speech_channels = None      # the text tower reads no speech frames
    self.text.heads.channel_kernel = None        # nor predicts speech channels
    self.text.heads.ctc_kernel = None            # the CTC head reads speech frames: speech tower
    self.speech = SpeechTextLM(sc, rngs=rngs)
    self.text_input = InputMLP(tc, rngs=rngs) if cfg.zipper_text.input_mlp else None
    self.speech_input = InputMLP(sc, rngs=rngs) if cfg.zipper_speech.input_mlp else None
    plan_every = self.every()
    self.text_cross = nnx.List([GatedCrossAttention(tc, sc.embed_dim, rngs=rngs)
                                for _ in range(self._num_cross("text", plan_every))])
    self.speech_cross = nnx.List([GatedCrossAttention(sc, tc.embed_dim, rngs=rngs)
                                  for _ in range(self._num_cross("speech", plan_every))])
    for t in TOWERS:     # each tower's parameters name their own axes (models/zipper_axes.py)
      for part in (self.tower(t), self.text_input if t == "text" else self.speech_input,
                   self.cross(t)):
        if part is not None:
          name_tower_axes(part, t)

  # -- structure --------------------------------------------------------------------------------
  def every(self) -> tuple[int, int]:
    return (self.cfg.zipper_text.cross_every, self.cfg.zipper_speech.cross_every)

  def depths(self) -> tuple[int, int]:
    return (self.cfg.zipper_text.num_layers, self.cfg.zipper_speech.num_layers)

  def _num_cross(self, tower, every) -> int:
    k = dict(zip(TOWERS, every))[tower]
    return dict(zip(TOWERS, self.depths()))[tower] // k if k else 0

  def tower(self, name: str) -> SpeechTextLM:
    return self.text if name == "text" else self.speech

  def cross(self, name: str):
    return self.text_cross if name == "text" else self.speech_cross

  @property
  def heads(self) -> ZipperHeads:
    return ZipperHeads(self.text.heads, self.speech.heads)

  def streams(self, tokens_BL, segment_ids_BL, positions_BL) -> ZipperStreams:
    return zipper_streams(tokens_BL, segment_ids_BL, positions_BL, self.cfg.vocab,
                          self.cfg.zipper_speech_specials)

  # -- forward ----------------------------------------------------------------------------------
  def _embed(self, name, tokens_BL, s: ZipperStreams, speech_codes_BLK, dropped_BL=None):
    lm = self.tower(name)
    x_BLD = lm.towers(tokens_BL, s.segment_ids(name), s.positions(name),
                      speech_codes_BLK if name == "speech" else None,
                      dropped_BL=dropped_BL if name == "speech" else None)
    mlp = self.text_input if name == "text" else self.speech_input
    return x_BLD if mlp is None else mlp(x_BLD)

  def _fuse(self, tokens_BL, s: ZipperStreams, speech_codes_BLK, runner,
            dropped_BL=None) -> ZipperHidden:
    h = runner.run({t: self._embed(t, tokens_BL, s, speech_codes_BLK, dropped_BL) for t in TOWERS})
    final = {t: constrain(self.tower(t).final_norm(h[t]), ("batch", "length", "act_embed"))
             for t in TOWERS}
    return ZipperHidden(final["text"], final["speech"], s.speech_BL)

  def __call__(self, tokens, segment_ids, positions, speech_codes=None,
               dropped_BL=None) -> ZipperHidden:
    """tokens, segment_ids, positions: int32[B, L]; speech_codes: int32[B, L, K-1]; dropped_BL:
    bool[B, L] speech positions whose input is hidden (training only)."""
    s = self.streams(tokens, segment_ids, positions)
    return self._fuse(tokens, s, speech_codes, _Layers(self, s), dropped_BL)

  def forward_cached(self, tokens, segment_ids, positions, speech_codes, cache: ZipperCache,
                     empty: bool = False):
    """Generation (the shared model's contract): the new positions attend the cache slots written
    before and each other, in both towers and across them; returns (ZipperHidden, cache)."""
    speech_BL = is_speech_tower(tokens, self.cfg.vocab, self.cfg.zipper_speech_specials)
    live_BL = segment_ids > 0
    stream_BL = jnp.zeros_like(positions)
    for member_BL, slot_member_BS in ((speech_BL, cache.speech_BS), (~speech_BL, ~cache.speech_BS)):
      m_BL = (member_BL & live_BL).astype(jnp.int32)
      prior_B = ((cache.segment_ids_BS > 0) & slot_member_BS).sum(-1).astype(jnp.int32)
      stream_BL = jnp.where(member_BL, prior_B[:, None] + jnp.cumsum(m_BL, 1) - m_BL, stream_BL)
    stream_BL = jnp.where(live_BL, stream_BL, 0)
    s = ZipperStreams(speech_BL, jnp.where(speech_BL, 0, segment_ids),
                      jnp.where(speech_BL, segment_ids, 0), jnp.where(speech_BL, 0, stream_BL),
                      jnp.where(speech_BL, stream_BL, 0), positions.astype(jnp.int32))
    runner = _CachedLayers(self, s, cache, write_zipper_slots(cache, segment_ids, positions,
                                                              speech_BL, stream_BL), empty)
    hidden = self._fuse(tokens, s, speech_codes, runner)
    return hidden, runner.finish()

  def logits(self, tokens, segment_ids, positions, speech_codes=None):
    """Full logits: ([B, L, V], [B, L, K-1, C] | None), each position by its tower's heads."""
    h = self(tokens, segment_ids, positions, speech_codes)
    return self.heads.logits(h), self.heads.channel_logits(h)


def _run_layers(graphdef, stacked, cfg: ModelConfig, i: int, j: int, x_BLD, xs_extra, apply):
  """Layers [i, j) of a stacked block stack (`nnx.split` of it): scanned or unrolled, under the
  remat policy. `apply(block, x, extra) -> (x, out)`; `xs_extra` are per-layer inputs sliced alike."""
  part = jax.tree.map(lambda a: a[i:j], stacked)

  def layer(x, inputs):
    state, extra = inputs
    return apply(nnx.merge(graphdef, state), x, extra)

  layer = remat(layer, cfg.remat_policy)
  xs = (part, xs_extra)
  if cfg.scan_layers:
    return jax.lax.scan(layer, x_BLD, xs)
  outs = []
  for n in range(j - i):
    x_BLD, out = layer(x_BLD, jax.tree.map(lambda a, n=n: a[n], xs))
    outs.append(out)
  return x_BLD, jax.tree.map(lambda *a: jnp.stack(a), *outs) if outs[0] is not None else None


class _Layers:
  """Training / full-recomputation work of the fusion plan. With `scan_layers`, a plan that splits
  into periods (`fusion_periods`) runs as a scan over them: the parameters of each period's layers
  and cross-attentions are the scan's inputs (cross-attentions stacked here, as the layers are)."""

  def __init__(self, model: ZipperLM, s: ZipperStreams):
    self.model, self.s = model, s
    self.pair = model.paired and towers_pair(model.cfg.tower("text"), model.cfg.tower("speech"))

  def run(self, h: dict) -> dict:
    model = self.model
    depths, every = model.depths(), model.every()
    periods = fusion_periods(depths, every) if model.cfg.scan_layers else 1
    plan, needed = fusion_plan(tuple(n // periods for n in depths), every)
    plan = pair_towers(plan) if self.pair else plan
    blocks = {t: nnx.split(model.tower(t).decoder.blocks) for t in TOWERS}
    crosses = {t: self._stacked_crosses(t) for t in TOWERS}
    if periods == 1:
      return run_plan(plan, needed, h, lambda t, i, j, x: self.layers(t, blocks[t], i, j, x),
                      lambda t, c, x, src: self.cross(t, crosses[t], c, x, src),
                      lambda i, j, x: self.layers2(blocks, i, j, x),
                      lambda cs, x, src: self.cross2(crosses, cs, x, src))
    per_period = lambda a: a.reshape(periods, a.shape[0] // periods, *a.shape[1:])  # noqa: E731
    xs = {t: (jax.tree.map(per_period, blocks[t][1]),
              None if crosses[t] is None else jax.tree.map(per_period, crosses[t][1]))
          for t in TOWERS}

    def period(h, xs):
      return run_plan(plan, needed, h,
                      lambda t, i, j, x: self.layers(t, (blocks[t][0], xs[t][0]), i, j, x),
                      lambda t, c, x, src: self.cross(t, (crosses[t][0], xs[t][1]), c, x, src),
                      lambda i, j, x: self.layers2({t: (blocks[t][0], xs[t][0]) for t in TOWERS},
                                                   i, j, x),
                      lambda cs, x, src: self.cross2({t: (crosses[t][0], xs[t][1]) for t in TOWERS},
                                                     cs, x, src)), None
    return jax.lax.scan(period, h, xs)[0]

  def _stacked_crosses(self, t):
    """(graphdef, state with a leading cross axis) of tower t's cross-attentions, or None."""
    mods = self.model.cross(t)
    if not len(mods):
      return None
    split = [nnx.split(m) for m in mods]
    return split[0][0], jax.tree.map(lambda *a: jnp.stack(a), *[st for _, st in split])

  def layers(self, t, blocks, i, j, x_BLD):
    lm, s = self.model.tower(t), self.s
    seg, pos = s.segment_ids(t), s.positions(t)
    x_BLD, _ = _run_layers(*blocks, lm.cfg, i, j, x_BLD, None,
                           lambda block, x, _: (block(x, seg, pos), None))
    return x_BLD

  def layers2(self, blocks, i, j, x: dict) -> dict:
    """Layers [i, j) of both towers, each layer as `paired_block`."""
    cfg = self.model.cfg
    parts = {t: jax.tree.map(lambda a: a[i:j], blocks[t][1]) for t in TOWERS}

    def layer(x, states):
      mods = {t: nnx.merge(blocks[t][0], states[t]) for t in TOWERS}
      return paired_block(mods, self.s, x), None

    layer = remat(layer, cfg.remat_policy)
    if cfg.scan_layers:
      return jax.lax.scan(layer, x, parts)[0]
    for n in range(j - i):
      x, _ = layer(x, jax.tree.map(lambda a, n=n: a[n], parts))
    return x

  def cross(self, t, crosses, c, x_BLD, source_BLD):
    s, o = self.s, other(t)
    graphdef, stacked = crosses
    state = jax.tree.map(lambda a: a[c], stacked)

    def apply(state, x_BLD, source_BLD):
      mod = nnx.merge(graphdef, state)
      k_BLGE, v_BLGE = mod.keys(source_BLD, s.order)
      return mod(x_BLD, s.segment_ids(t), s.order, k_BLGE, v_BLGE, s.segment_ids(o), s.order,
                 causal=True)
    return remat(apply, cross_remat_policy(self.model.cfg.remat_policy))(state, x_BLD, source_BLD)

  def cross2(self, crosses, cs: dict, x: dict, sources: dict) -> dict:
    """Both towers' cross-attentions `cs` (tower -> index) as one attention."""
    states = {t: jax.tree.map(lambda a, c=c: a[c], crosses[t][1]) for t, c in cs.items()}

    def apply(states, x, sources):
      mods = {t: nnx.merge(crosses[t][0], states[t]) for t in TOWERS}
      return paired_cross_attention(mods, self.s, x, sources)
    return remat(apply, cross_remat_policy(self.model.cfg.remat_policy))(states, x, sources)


class _CachedLayers:
  """Generation work of the fusion plan: self-attention through the KV cache (slots of the
  tower's own modality, ordered by stream position); cross-attention keys written into the cross
  cache first, then attended over all slots of the other tower (order: the unified position).

  When the towers pair (`towers_pair`, `ZipperLM.paired`; their keys then share the cache arrays)
  the plan runs paired as in training: each layer's two self-attentions as one cached attention
  over the shared cache layer (`paired_block`), each fusion point's two cross-attentions as one
  attention over the shared cross layer, so a step reads each cache layer once. Otherwise each
  tower runs on its own, reading its keys from the shared arrays or its own."""

  def __init__(self, model: ZipperLM, s: ZipperStreams, cache: ZipperCache, new_slots: ZipperCache,
               empty: bool):
    self.model, self.s, self.cache, self.new_slots, self.empty = model, s, cache, new_slots, empty
    tc, sc = model.cfg.tower("text"), model.cfg.tower("speech")
    self.pair = model.paired and towers_pair(tc, sc) and cache.shared
    self.new_kv = {t: {} for t in TOWERS + (SHARED,)}     # layer -> its new (keys, values)
    self.new_cross = collections.defaultdict(dict)        # cross layer -> tower -> (keys, values)

  def run(self, h: dict) -> dict:
    """The whole plan, unrolled (a generation step is short; its caches are sliced per layer)."""
    plan, needed = fusion_plan(self.model.depths(), self.model.every())
    if self.pair:
      return run_plan(pair_towers(plan), needed, h, self.layers, self.cross, self.layers2,
                      self.cross2)
    return run_plan(plan, needed, h, self.layers, self.cross)

  def _stack_kv(self, t, i, j):
    stack = self.cache.stack(t)
    if self.empty:
      dummy = jnp.zeros((j - i, 0, 0, 0, 0), stack.k_YBGSE.dtype)
      return dummy, dummy
    return stack.k_YBGSE[i:j], stack.v_YBGSE[i:j]

  def layers(self, t, i, j, x_BLD):
    lm, s, cache = self.model.tower(t), self.s, self.cache
    mine_BS = cache.speech_BS if t == "speech" else ~cache.speech_BS
    kv_seg_BS = jnp.where(mine_BS, cache.segment_ids_BS, 0)
    seg, pos = s.segment_ids(t), s.positions(t)

    def apply(block, x, extra):
      view = LayerView(extra[0], extra[1], kv_seg_BS, cache.stream_BS, self.empty)
      return block(x, seg, pos, view)

    x_BLD, (k_YBLGE, v_YBLGE) = _run_layers(*nnx.split(lm.decoder.blocks), lm.cfg, i, j, x_BLD,
                                            self._stack_kv(t, i, j), apply)
    for y in range(i, j):
      self.new_kv[t][y] = (k_YBLGE[y - i], v_YBLGE[y - i])
    return x_BLD

  def layers2(self, i, j, x: dict) -> dict:
    """Layers [i, j) of both towers, each as one `paired_block` over the shared cache layer."""
    cache = self.cache
    live_BS = cache.segment_ids_BS > 0
    seg_BS = jnp.where(live_BS, 2 * cache.segment_ids_BS + cache.speech_BS.astype(jnp.int32), 0)
    k_YBGSE, v_YBGSE = self._stack_kv("text", i, j)
    split = {t: nnx.split(self.model.tower(t).decoder.blocks) for t in TOWERS}
    for y in range(i, j):
      blocks = {t: nnx.merge(gd, jax.tree.map(lambda a, y=y: a[y], st)) for t, (gd, st) in split.items()}
      view = LayerView(k_YBGSE[y - i], v_YBGSE[y - i], seg_BS, cache.stream_BS, self.empty)
      x, self.new_kv[SHARED][y] = paired_block(blocks, self.s, x, view)
    return x

  def _over_cache(self, k_BSGE, v_BSGE, seg_BS, k_BLGE, v_BLGE, seg_BL):
    """A cross-attention's keys: the slots written before this call (`seg_BS`: 0 where it may not
    look), then the new positions' (written into the cache once, in `finish`). A one-token step's
    own key is never its query's (it belongs to the other tower's cross-attention)."""
    dt = k_BLGE.dtype
    return (jnp.concatenate([k_BSGE.astype(dt), k_BLGE], 1),
            jnp.concatenate([v_BSGE.astype(dt), v_BLGE], 1), jnp.concatenate([seg_BS, seg_BL], 1),
            jnp.concatenate([self.cache.order_BS, self.s.order], 1))

  def cross(self, t, c, x_BLD, source_BLD):
    s, o, cache = self.s, other(t), self.cache
    mod = self.model.cross(t)[c]
    k_BLGE, v_BLGE = mod.keys(source_BLD, s.order)
    self.new_cross[c if cache.shared else (t, c)][t] = (k_BLGE, v_BLGE)
    if self.empty:     # nothing cached before: the new positions are all there is (training path)
      return mod(x_BLD, s.segment_ids(t), s.order, k_BLGE, v_BLGE, s.segment_ids(o), s.order,
                 causal=True)
    cc = cache.cross_of(t)
    theirs_BS = cache.speech_BS if o == "speech" else ~cache.speech_BS
    keys = self._over_cache(cc.k_YBSGE[c], cc.v_YBSGE[c], jnp.where(theirs_BS, cache.segment_ids_BS, 0),
                            k_BLGE, v_BLGE, s.segment_ids(o))
    return mod(x_BLD, s.segment_ids(t), s.order, *keys)

  def cross2(self, cs: dict, x: dict, sources: dict) -> dict:
    """Both towers' cross-attentions `cs` (tower -> index) as one attention over the shared cross
    layers (`paired_cross_attention`)."""
    s, cache = self.s, self.cache
    mods = {t: self.model.cross(t)[c] for t, c in cs.items()}
    q_BLHE = paired_cross_queries(mods, s, x)
    k_BLGE, v_BLGE = paired_cross_keys(mods, s, sources)
    for t, c in cs.items():      # text's keys hold at speech positions, speech's at text ones
      self.new_cross[c][t] = (k_BLGE, v_BLGE)
    q_seg_BL, kv_seg_BL = paired_segment_ids(s)
    impl = mods["text"].cfg.attention_impl
    if self.empty:     # nothing cached before: as in training (`paired_cross_attention`)
      o_BLHE = dispatch.attention(q_BLHE, k_BLGE, v_BLGE, q_seg_BL, s.order, kv_seg_BL, s.order,
                                  implementation=impl, causal=True)
      return paired_cross_out(mods, s, x, o_BLHE)
    cc = cache.cross[SHARED]
    k_BSGE, v_BSGE = cc.k_YBSGE[cs["text"]], cc.v_YBSGE[cs["text"]]
    if cs["text"] != cs["speech"]:     # text's keys at speech slots of its layer, speech's at text
      speech_BS11 = cache.speech_BS[:, :, None, None]
      k_BSGE = jnp.where(speech_BS11, k_BSGE, cc.k_YBSGE[cs["speech"]])
      v_BSGE = jnp.where(speech_BS11, v_BSGE, cc.v_YBSGE[cs["speech"]])
    seg_BS = cache.segment_ids_BS
    seg_BS = jnp.where(seg_BS > 0, 2 * seg_BS + 1 - cache.speech_BS.astype(seg_BS.dtype), 0)
    k_BSGE, v_BSGE, kv_seg_BS, kv_order_BS = self._over_cache(k_BSGE, v_BSGE, seg_BS, k_BLGE,
                                                              v_BLGE, kv_seg_BL)
    o_BLHE = dispatch.attention(q_BLHE, k_BSGE, v_BSGE, q_seg_BL, s.order, kv_seg_BS, kv_order_BS,
                                implementation=impl)
    return paired_cross_out(mods, s, x, o_BLHE)

  def finish(self) -> ZipperCache:
    """The cache with every layer's new self- and cross-attention keys written (one write per
    array). Shared arrays: a layer's keys of both towers merged by position, text's self-attention
    keys at text positions, text's cross-attention keys at speech positions (those that read the
    speech tower's state); a layer only one tower has keeps its keys at every position."""
    cache, speech_BL11 = self.cache, self.s.speech_BL[:, :, None, None]

    def merged(by_tower: dict, speech_key: str):
      if SHARED in by_tower:
        return by_tower[SHARED]
      if len(by_tower) == 1:
        return next(iter(by_tower.values()))
      if by_tower["text"] is by_tower["speech"]:    # a paired cross-attention's keys
        return by_tower["text"]
      sp, tx = by_tower[speech_key], by_tower[other(speech_key)]
      return tuple(jnp.where(speech_BL11, a, b) for a, b in zip(sp, tx))

    def stacked(kvs):
      return jnp.stack([k for k, _ in kvs]), jnp.stack([v for _, v in kvs])

    stacks, cross = dict(cache.stacks), dict(cache.cross)
    if cache.shared:
      depth, ncross = cache.stacks[SHARED].k_YBGSE.shape[0], cache.cross[SHARED].k_YBSGE.shape[0]
      stack_kv = {SHARED: [merged({t: kv[y] for t, kv in self.new_kv.items() if y in kv}, "speech")
                           for y in range(depth)]}
      cross_kv = {SHARED: [merged(self.new_cross[y], "text") for y in range(ncross)]}
    else:
      stack_kv = {t: [self.new_kv[t][y] for y in range(len(self.new_kv[t]))] for t in TOWERS}
      cross_kv = {t: [self.new_cross[(t, c)][t] for c in range(cache.cross[t].k_YBSGE.shape[0])]
                  for t in TOWERS}
    for name, kvs in stack_kv.items():
      stacks[name] = write_new_keys(cache.stacks[name], *stacked(kvs), self.s.order)
    for name, kvs in cross_kv.items():
      if kvs:
        cross[name] = write_cross_keys(cache.cross[name], *stacked(kvs), self.s.order[:, 0])
    return self.new_slots.replace(stacks=stacks, cross=cross)
