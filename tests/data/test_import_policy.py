"""Import policy: training on cached data (the grain path) never imports TensorFlow or seqio."""
import json
import os
import subprocess
import sys

from slm_jax.data import cache
from slm_jax.data.synthetic import synthetic_examples
from slm_jax.unified_vocab import UnifiedVocab

HEAVY = ("tensorflow", "seqio", "tensorflow_datasets")
VOCAB = dict(text_size=100, speech_codebook_sizes=(64,))

# What `slm-train --gin_file=runs/demo_spiritlm.gin` imports, then both of its data iterators, one
# batch each. (runs/demo.gin also transcribes held-out speech during training, which needs the text
# tokenizer, a seqio vocabulary: that run imports seqio for its periodic evaluation.)
GRAIN_RUN = """
import sys
from slm_jax import configuration
import slm_jax.tools.train, slm_jax.train.loop
configuration.parse(["runs/demo_spiritlm.gin"], ["DEMO_CACHE = '{root}'"])
from slm_jax.data.batch import HostShard
from slm_jax.data.pipeline import factories
from slm_jax.unified_vocab import UnifiedVocab
vocab = UnifiedVocab(**{vocab})
for split in ("train", "eval"):
  it = factories.cached_task_data(split=split, batch_size=2, seq_len=32, vocab=vocab,
                                  shard=HostShard(0, 1, 0, 2), seed=0, cache_root="{root}")
  next(it)
{extra}
print("HEAVY", [m for m in {heavy} if m in sys.modules])
"""


def _heavy_modules(root, repo_root, extra=""):
  code = GRAIN_RUN.format(root=root, vocab=VOCAB, heavy=HEAVY, extra=extra)
  env = dict(os.environ, JAX_PLATFORMS="cpu", TF_CPP_MIN_LOG_LEVEL="3")
  proc = subprocess.run([sys.executable, "-c", code], cwd=repo_root, env=env, capture_output=True,
                        text=True, timeout=300, check=False)
  assert proc.returncode == 0, proc.stderr[-3000:]
  (line,) = [x for x in proc.stdout.splitlines() if x.startswith("HEAVY")]
  return line


def test_grain_training_path_imports_no_tensorflow_or_seqio(tmp_path, repo_root):
  vocab = UnifiedVocab(**VOCAB)
  for split in ("train", "validation"):
    cache.write_cache(synthetic_examples(vocab, 8, mean_len=12, max_len=33),
                      str(tmp_path / split / "a"), vocab, task="a", split=split, progress=False)
    (tmp_path / split / "mixture.json").write_text(json.dumps({"rates": {"a": 1.0}}))
  assert _heavy_modules(tmp_path, repo_root) == "HEAVY []"
  # The check sees them when they are imported (the seqio path does).
  seqio_path = _heavy_modules(tmp_path, repo_root, "import gin\nwith gin.unlock_config():\n"
                              "  import slm_jax.data.pipeline.seqio_pipeline")
  assert "'tensorflow'" in seqio_path and "'seqio'" in seqio_path
