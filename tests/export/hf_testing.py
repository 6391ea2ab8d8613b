"""Helpers shared by the HF import/export tests: tiny random transformers models and logits."""
import jax.numpy as jnp
import numpy as np
import torch
import transformers

V_TEXT = 96


def make_hf(tmp_path, name, *, arch="llama", heads=4, kv_heads=2, tie=False, layers=2,
            shard=False, dtype=None):
  """A tiny random HF causal LM saved to tmp_path/name (weights perturbed so biases are non-zero)."""
  torch.manual_seed(0)
  kw = dict(vocab_size=V_TEXT, hidden_size=32, intermediate_size=48, num_hidden_layers=layers,
            num_attention_heads=heads, num_key_value_heads=kv_heads, tie_word_embeddings=tie,
            rope_theta=1000.0, rms_norm_eps=1e-5, bos_token_id=5, eos_token_id=7)
  if arch == "llama":
    model = transformers.LlamaForCausalLM(transformers.LlamaConfig(**kw))
  else:
    model = transformers.Qwen2ForCausalLM(transformers.Qwen2Config(**kw))
  with torch.no_grad():
    for p in model.parameters():
      p.add_(0.1 * torch.randn_like(p))
  model.eval()
  if dtype is not None:
    model = model.to(dtype)
  path = str(tmp_path / name)
  model.save_pretrained(path, max_shard_size="30KB" if shard else "5GB")
  return model, path


def hf_logits(model, ids):
  with torch.no_grad():
    return model(torch.tensor(ids)).logits.float().numpy()


def our_text_logits(model, cfg, ids, segment_ids=None, positions=None):
  """Our logits on text ids (mapped into the unified range), restricted to the text columns."""
  b, l = ids.shape
  v = cfg.vocab
  seg = np.ones((b, l), np.int32) if segment_ids is None else segment_ids
  pos = np.tile(np.arange(l), (b, 1)) if positions is None else positions
  codes = jnp.zeros((b, l, v.num_channels - 1), jnp.int32) if v.num_channels > 1 else None
  logits, _ = model.logits(jnp.asarray(ids + v.text_start), jnp.asarray(seg), jnp.asarray(pos), codes)
  return np.asarray(logits)[..., v.text_start:v.text_start + v.text_size]


def save_word_tokenizer(path, size=V_TEXT):
  """A word-level tokenizer.json with `size` ids ("<unk>", "</s>", "w2" .. "w{size-1}") in `path`."""
  import os  # pylint: disable=import-outside-toplevel
  import tokenizers  # pylint: disable=import-outside-toplevel
  words = ["<unk>", "</s>"] + [f"w{i}" for i in range(2, size)]
  tok = tokenizers.Tokenizer(tokenizers.models.WordLevel({w: i for i, w in enumerate(words)},
                                                         unk_token="<unk>"))
  tok.pre_tokenizer = tokenizers.pre_tokenizers.Whitespace()
  tok.decoder = tokenizers.decoders.WordPiece(prefix="##")  # joins words with spaces
  tok.save(os.path.join(path, "tokenizer.json"))
  return os.path.join(path, "tokenizer.json")
