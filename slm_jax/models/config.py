"""Model configuration: one frozen dataclass, bound from `configs/models/*.gin`."""
from __future__ import annotations

import dataclasses

import gin
import jax.numpy as jnp

from slm_jax.configuration import ConfigError
from slm_jax.kernels import dispatch
from slm_jax.models import ctc_spelling
from slm_jax.models.remat import REMAT_POLICIES
from slm_jax.models.zipper_config import TowerConfig, as_tower_config
from slm_jax.unified_vocab import UnifiedVocab

ARCHITECTURES = ("shared", "zipper")
_DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16, "float16": jnp.float16}


def as_dtype(name_or_dtype):
  if isinstance(name_or_dtype, str):
    try:
      return _DTYPES[name_or_dtype]
    except KeyError:
      raise ConfigError(f"unknown dtype {name_or_dtype!r}; use one of {sorted(_DTYPES)}") from None
  return name_or_dtype


@gin.configurable
@dataclasses.dataclass(frozen=True)
class ModelConfig:
  """Shapes and numerics of the speech-text decoder.

  The unified vocabulary (`vocab`) fixes the embedding and output ranges; `vocab_pad_multiple`
  pads the embedding/logit tables for efficient sharding (padded ids are never targets).
  """
  vocab: UnifiedVocab = dataclasses.field(default_factory=UnifiedVocab)
  num_layers: int = 2
  embed_dim: int = 64
  num_heads: int = 4
  num_kv_heads: int = 2
  head_dim: int = 16
  mlp_dim: int = 128
  rope_theta: float = 10_000.0
  norm_eps: float = 1e-5
  tie_embeddings: bool = True
  param_dtype: str = "float32"
  dtype: str = "float32"              # compute dtype of activations and matmuls
  scan_layers: bool = True
  remat_policy: str = "none"          # a name in models/remat.py's REMAT_POLICIES
  text_tower_layers: int = 0          # layers applied to text positions before the shared decoder
  speech_tower_layers: int = 0        # layers applied to speech positions before the shared decoder
  vocab_pad_multiple: int = 128
  attention_impl: str = "auto"        # a name in kernels/dispatch.py ("auto": chosen per backend)
  init_std: float = 0.02
  qkv_bias: bool = False              # biases on the q/k/v projections (Qwen2 family)
  # 0: speech channels 1..K-1 embedded by full per-code tables; R > 0: factorized through R
  # features per code (models/towers.py `SpeechChannelEmbedding`).
  speech_embed_rank: int = 0
  asr_ctc: bool = False               # a CTC head over speech frames for LossOptions.asr_ctc_weight
                                      # (a Zipper's sits on its speech tower)
  # The CTC head (when asr_ctc) predicts text ids (""), or spells the transcript over this
  # alphabet (e.g. " 'abc...z"; models/ctc_spelling.py; the loss needs LossOptions.ctc_spelling).
  ctc_alphabet: str = ""
  # CTC outputs per speech position (e.g. one per stacked dMel frame): a character head needs
  # more outputs than a position's characters.
  ctc_upsample: int = 1
  # Task tags (e.g. ("[ASR]",)) whose segments' speech is read whole: the decoder's self-attention
  # sees each such speech span bidirectionally, like an encoder (models/attention_order.py).
  bidirectional_speech_tags: tuple = ()
  # F > 1: the K speech channels are F frames of K / F bins (dMel's stacked frames, frame-major)
  # read one after another: frame j's channel logits also see the levels of frame j - 1
  # (teacher-forced in training, chosen ones in generation; models/heads.py). 1: all at once.
  speech_readout_frames: int = 1
  # "shared": one decoder over the unified stream; "zipper": a text and a speech tower fused by
  # gated cross-attention (models/zipper.py), shaped by `zipper_text` / `zipper_speech` (the
  # layer/width fields above then do not apply) and `zipper_speech_specials` (specials that feed
  # the speech tower; every other non-speech id feeds the text tower).
  architecture: str = "shared"
  zipper_text: TowerConfig | None = None
  zipper_speech: TowerConfig | None = None
  zipper_speech_specials: tuple[str, ...] = ("[SPEECH]", "[SPEECH_LM]")

  def __post_init__(self):
    for name in ("zipper_text", "zipper_speech"):   # model_config.json stores them as lists
      object.__setattr__(self, name, as_tower_config(getattr(self, name)))
    object.__setattr__(self, "zipper_speech_specials", tuple(self.zipper_speech_specials))
    object.__setattr__(self, "bidirectional_speech_tags", tuple(self.bidirectional_speech_tags))
    for tag in self.bidirectional_speech_tags:
      try:
        self.vocab.special_id(tag)
      except KeyError as e:
        raise ConfigError(f"ModelConfig.bidirectional_speech_tags: {e.args[0]}") from None
    if self.bidirectional_speech_tags and self.architecture != "shared":
      raise ConfigError("ModelConfig.bidirectional_speech_tags applies to the shared decoder only; "
                        f"architecture={self.architecture!r} attends causally")
    if self.architecture not in ARCHITECTURES:
      raise ConfigError(f"architecture={self.architecture!r}; use one of {ARCHITECTURES}")
    if self.architecture == "zipper":
      if self.zipper_text is None or self.zipper_speech is None:
        raise ConfigError("architecture='zipper' needs ModelConfig.zipper_text and zipper_speech "
                          "(e.g. @text/TowerConfig() and @speech/TowerConfig())")
      for name in ("zipper_text", "zipper_speech"):
        t = getattr(self, name)
        if t.num_layers < 1 or t.cross_every < 0:
          raise ConfigError(f"ModelConfig.{name}: num_layers={t.num_layers} must be >= 1 and "
                            f"cross_every={t.cross_every} >= 0")
        self.tower(name.split("_")[1])    # validates heads and widths
    if self.speech_readout_frames < 1 or self.vocab.num_channels % self.speech_readout_frames:
      raise ConfigError(f"speech_readout_frames={self.speech_readout_frames} must be >= 1 and "
                        f"divide the {self.vocab.num_channels} speech channels (e.g. dMel's stack)")
    if self.speech_readout_frames > 1 and self.architecture != "shared":
      raise ConfigError("ModelConfig.speech_readout_frames > 1 applies to the shared decoder only")
    if self.ctc_upsample < 1:
      raise ConfigError(f"ctc_upsample={self.ctc_upsample} must be >= 1 (CTC outputs per position)")
    ctc_spelling.check_alphabet(self.ctc_alphabet)
    if self.speech_embed_rank < 0:
      raise ConfigError(f"speech_embed_rank={self.speech_embed_rank} must be >= 0 (0 = full tables)")
    if self.num_heads % self.num_kv_heads:
      raise ConfigError(f"num_heads={self.num_heads} must be a multiple of num_kv_heads={self.num_kv_heads}")
    if self.head_dim % 2:
      raise ConfigError(f"head_dim={self.head_dim} must be even for rotary embeddings")
    if self.remat_policy not in REMAT_POLICIES:
      raise ConfigError(f"remat_policy={self.remat_policy!r}; use one of {tuple(REMAT_POLICIES)}")
    if self.attention_impl not in dispatch.names():
      raise ConfigError(f"attention_impl={self.attention_impl!r}; use one of {dispatch.names()}")
    as_dtype(self.param_dtype), as_dtype(self.dtype)

  @property
  def ctc_classes(self) -> int:
    """Classes of the CTC head per output: the blank, then characters or text ids."""
    return 1 + (len(self.ctc_alphabet) if self.ctc_alphabet else self.vocab.text_size)

  @property
  def padded_vocab_size(self) -> int:
    m = self.vocab_pad_multiple
    return -(-self.vocab.size // m) * m

  @property
  def num_channels(self) -> int:
    return self.vocab.num_channels

  @property
  def jnp_dtype(self):
    return as_dtype(self.dtype)

  @property
  def jnp_param_dtype(self):
    return as_dtype(self.param_dtype)

  def tower(self, name: str) -> "ModelConfig":
    """The config of a Zipper tower ("text" or "speech") as a shared-architecture model."""
    t = self.zipper_text if name == "text" else self.zipper_speech
    return dataclasses.replace(
        self, architecture="shared", zipper_text=None, zipper_speech=None, text_tower_layers=0,
        speech_tower_layers=0, num_layers=t.num_layers, embed_dim=t.embed_dim,
        num_heads=t.num_heads, num_kv_heads=t.num_kv_heads, head_dim=t.head_dim, mlp_dim=t.mlp_dim)

  def replace(self, **kw) -> "ModelConfig":
    return dataclasses.replace(self, **kw)
