"""Warm start: a fresh run's text path from a Hugging Face Llama / Qwen2 checkpoint.

    slm-train --gin_file=... --hf_checkpoint=DIR --workdir=...   (gin: WarmStart.hf_checkpoint)

With a checkpoint directory set (config.json, safetensors weights, tokenizer.json):
- The run's UnifiedVocab takes its text range from the HF tokenizer (through
  slm_jax.data.text.hf_vocab): text_size is the checkpoint's vocab_size (the tokenizer padded like
  the embedding table), text_vocab_name the tokenizer's identity; the speech channels and specials
  stay as gin sets them. This holds on every invocation, resumed ones included, so the run's
  vocab_spec.json, its checkpoints and the data caches it reads all carry this vocabulary.
- The model config must fit config.json (layers, widths, heads, rotary base, norm epsilon, tying,
  q/k/v biases); a mismatch is an HFImportError naming the fields and the bindings to set.
- At step 0 only (a workdir without checkpoints), the embeddings, blocks, final norm and the head
  rows of the text vocabulary are copied from the checkpoint (slm_jax/export/hf_import.py); the
  other rows of the tables start at the mean HF row, and speech-only parameters (speech tower,
  extra channel tables and heads) keep their fresh init. A resumed run restores its own
  checkpoint and never reads the HF weights again.

    python -m slm_jax.train.warm_start DIR

prints the ModelConfig and UnifiedVocab gin bindings that fit DIR (for the model's gin file, and
for `slm-data cache`, whose caches must carry the same vocabulary).
"""
from __future__ import annotations

import argparse
import dataclasses
import logging
import os
import sys

import gin
import jax
from flax import nnx

from slm_jax.export import hf_import
from slm_jax.export.hf_import import HFImportError
from slm_jax.export.safetensors_io import CheckpointReader
from slm_jax.models.config import ModelConfig
from slm_jax.unified_vocab import UnifiedVocab

TOKENIZER_FILE = "tokenizer.json"


@gin.configurable
@dataclasses.dataclass(frozen=True)
class WarmStart:
  """Where a fresh run's text path comes from.

  Attributes:
    hf_checkpoint: a Hugging Face model directory ("" = no warm start, a random init).
    tokenizer: its tokenizer.json, or a directory holding one ("" = the checkpoint directory).
    new_row_noise: noise of the table rows outside the text vocabulary, relative to the
      per-dimension std of the HF rows (they start at the mean HF row).
    text_checkpoint, speech_checkpoint: Zipper only: an slm_jax inference checkpoint (slm-export
      of a shared-architecture run shaped like the tower) for the text / speech tower
      (models/zipper_init.py). A Zipper's `hf_checkpoint` goes into its text tower.
  """
  hf_checkpoint: str = ""
  tokenizer: str = ""
  new_row_noise: float = 0.1
  text_checkpoint: str = ""
  speech_checkpoint: str = ""


def options() -> WarmStart:
  """The gin-bound WarmStart."""
  with gin.config_scope(None):
    return WarmStart()


def _tokenizer_file(opts: WarmStart) -> str:
  path = opts.tokenizer or opts.hf_checkpoint
  if os.path.isdir(path):
    path = os.path.join(path, TOKENIZER_FILE)
  if not os.path.exists(path):
    raise HFImportError(
        f"no Hugging Face tokenizer at {path}: the warm start builds the run's text vocabulary "
        "from it. Save it beside the weights (tokenizer.save_pretrained(DIR)) or set "
        "WarmStart.tokenizer = '/path/to/tokenizer.json'")
  return path


def _gin_bound(name: str) -> bool:
  try:
    gin.query_parameter(name)
    return True
  except ValueError:
    return False


def text_vocabulary(opts: WarmStart, hf: dict):
  """The HF tokenizer as the run's text vocabulary, padded to the checkpoint's vocab_size."""
  # Imported here, not with this module: it brings TensorFlow (seqio), which a run without a warm
  # start does not need. Its gin configurables register while slm-train's config is locked.
  with gin.unlock_config():
    from slm_jax.data.text.hf_vocab import HFTokenizerVocab  # pylint: disable=import-outside-toplevel
  path = _tokenizer_file(opts)
  rows = int(hf["vocab_size"])
  text = HFTokenizerVocab(path, min_size=rows)
  if text.size != rows:
    raise HFImportError(f"the tokenizer {path} has {text.size} ids but the checkpoint's embedding "
                        f"table has vocab_size={rows} rows; use the tokenizer saved with the model")
  return text


def run_vocab(vocab: UnifiedVocab, text) -> UnifiedVocab:
  """`vocab` (from gin) with the text range of the tokenizer `text`.

  A text field that gin binds to another value is an error rather than silently replaced: gin's
  UnifiedVocab also lays out the ids of tasks tokenized on the fly, which must agree.
  """
  conflicts = [f"UnifiedVocab.{field} = {want!r}  (gin has {getattr(vocab, field)!r})"
               for field, want in (("text_size", text.size), ("text_vocab_name", text.name))
               if _gin_bound(f"UnifiedVocab.{field}") and getattr(vocab, field) not in (want, "")]
  if conflicts:
    raise HFImportError(
        "the gin config binds a text vocabulary that is not the warm-start checkpoint's "
        "tokenizer; remove these bindings or set them to:\n  " + "\n  ".join(conflicts))
  return dataclasses.replace(vocab, text_size=text.size, text_vocab_name=text.name)


def model_config(cfg: ModelConfig, opts: WarmStart | None = None) -> ModelConfig:
  """The run's ModelConfig: `cfg` unchanged without a warm start, else with the HF text vocabulary,
  checked against the checkpoint's config.json (HFImportError names what differs)."""
  opts = opts if opts is not None else options()
  if not opts.hf_checkpoint:
    return cfg
  hf = hf_import.read_hf_config(opts.hf_checkpoint)
  cfg = cfg.replace(vocab=run_vocab(cfg.vocab, text_vocabulary(opts, hf)))
  hf_import.check_model_config(_text_path(cfg), hf,
                               where=f"the Hugging Face checkpoint {opts.hf_checkpoint}")
  return cfg


def _text_path(cfg: ModelConfig) -> ModelConfig:
  """The config of what a HF checkpoint initializes: the model, or a Zipper's text tower."""
  return cfg.tower("text") if cfg.architecture == "zipper" else cfg


def init_state(run, opts: WarmStart | None = None):
  """A fresh TrainState for `run` (train.loop.TrainRun); with a warm start, its text path is the
  HF checkpoint's. Call only when the run starts at step 0."""
  state = run.init_state()
  opts = opts if opts is not None else options()
  towers = {t: d for t, d in (("text", opts.text_checkpoint), ("speech", opts.speech_checkpoint)) if d}
  if towers and run.cfg.architecture != "zipper":
    from slm_jax.configuration import ConfigError  # pylint: disable=import-outside-toplevel
    raise ConfigError("WarmStart.text_checkpoint / speech_checkpoint initialize Zipper towers; "
                      f"this model's architecture is {run.cfg.architecture!r}")
  if not (opts.hf_checkpoint or towers):
    return state
  hf = hf_import.read_hf_config(opts.hf_checkpoint) if opts.hf_checkpoint else None
  if hf is not None:
    hf_import.check_model_config(_text_path(run.cfg), hf,
                                 where=f"the Hugging Face checkpoint {opts.hf_checkpoint}")
  # Every process assembles the whole model on its CPU (the fresh init supplies the speech-only
  # parameters), imports the same files, and places its own shards of the result.
  from jax.experimental import multihost_utils  # pylint: disable=import-outside-toplevel
  host_params = multihost_utils.process_allgather(state.params, tiled=True)
  with jax.default_device(jax.local_devices(backend="cpu")[0]):
    model = nnx.merge(run.graphdef, host_params)
    if hf is not None:
      hf_import.import_weights(model.text if run.cfg.architecture == "zipper" else model,
                               CheckpointReader(opts.hf_checkpoint), hf, seed=run.seed,
                               new_row_noise=opts.new_row_noise)
    for tower, directory in towers.items():
      from slm_jax.models.zipper_init import restore_tower  # pylint: disable=import-outside-toplevel
      restore_tower(model, tower, directory)
      logging.info("warm start: the %s tower from %s", tower, directory)
    imported = jax.device_get(nnx.state(model, nnx.Param).to_pure_dict())
  params = jax.tree.map(
      lambda x, sh: jax.make_array_from_callback(x.shape, sh, lambda index: x[index]),
      imported, run.param_shardings)
  opt_state = jax.jit(run.optimizer.init, out_shardings=run.state_shardings.opt_state)(params)
  logging.info("warm start: text path from %s", opts.hf_checkpoint)
  return state.replace(params=params, opt_state=opt_state)


def gin_bindings(hf_checkpoint: str, tokenizer: str = "") -> list[str]:
  """The ModelConfig and UnifiedVocab bindings that fit the checkpoint (no text/speech towers)."""
  opts = WarmStart(hf_checkpoint=hf_checkpoint, tokenizer=tokenizer)
  hf = hf_import.read_hf_config(hf_checkpoint)
  text = text_vocabulary(opts, hf)
  cfg = hf_import.hf_config_to_model_config(hf, UnifiedVocab(text_size=text.size))
  lines = [f"ModelConfig.{f} = {getattr(cfg, f)!r}" for f in hf_import.FROM_CHECKPOINT if f != "vocab"]
  return lines + [f"UnifiedVocab.text_size = {text.size}",
                  f"UnifiedVocab.text_vocab_name = {text.name!r}"]


def main(argv=None) -> int:
  p = argparse.ArgumentParser(prog="python -m slm_jax.train.warm_start",
                              description="Prints the gin bindings that fit a Hugging Face checkpoint.")
  p.add_argument("hf_checkpoint", help="a Hugging Face Llama/Qwen2 model directory")
  p.add_argument("--tokenizer", default="", help="its tokenizer.json (default: in the directory)")
  args = p.parse_args(argv)
  print("\n".join(gin_bindings(args.hf_checkpoint, args.tokenizer)))
  return 0


if __name__ == "__main__":
  from slm_jax.tools import cli_errors  # pylint: disable=import-outside-toplevel
  sys.exit(cli_errors.run_main("warm_start", main))
