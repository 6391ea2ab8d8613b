"""Speech-text corpora: the offline demo corpus (fortunes + flite/espeak-ng), real test speech,
manifests (docs/data_contract.md section 1) and tfds builders (`tfds_builders`, imported apart
because it loads TensorFlow)."""
from slm_jax.data.corpus.build import build_demo_corpus, split_of
from slm_jax.data.corpus.errors import MissingPackageError
from slm_jax.data.corpus.fortunes import fortune_sentences
from slm_jax.data.corpus.manifest import (SAMPLE_RATE, SPLITS, iter_utterances, load_audio,
                                          read_manifest)
