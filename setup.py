"""slm_jax: JAX-native training of speech-text language models."""
import os

import setuptools

HERE = os.path.dirname(os.path.abspath(__file__))


def _requirements(name: str) -> list[str]:
  with open(os.path.join(HERE, name), encoding="utf-8") as f:
    return [line.strip() for line in f if line.strip() and not line.startswith("#")]


setuptools.setup(
    name="slm_jax",
    version="0.1.0",
    description="JAX-native training of speech-text language models (shared decoder / Zipper).",
    long_description=open(os.path.join(HERE, "README.md"), encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    python_requires=">=3.11",
    # Two top-level folders ship inside the package (docs/architecture.md, layout):
    #   tasks/   seqio Task/Mixture registrations, imported as `slm_jax.tasks`;
    #   configs/ the gin files, installed as slm_jax/configs/ (slm_jax.configuration finds them).
    packages=(setuptools.find_packages(include=["slm_jax", "slm_jax.*"])
              + ["slm_jax.tasks", "slm_jax.configs"]),
    package_dir={"slm_jax.tasks": "tasks", "slm_jax.configs": "configs"},
    package_data={"slm_jax.configs": ["**/*.gin"]},
    # Every third-party package slm_jax/, tasks/ and bench/ import, and no other (ml-collections:
    # sweeps, to come). Tested: Python 3.11 with jax 0.10.2, Python 3.12 with jax 0.12; flax 0.12.8.
    # requirements-corpus.txt: the corpus builder's (numpy, soundfile, gin-config, tqdm).
    install_requires=_requirements("requirements-corpus.txt") + [
        "jax>=0.10.2,<0.13",
        "flax>=0.12.8,<0.14",
        "optax>=0.2.8,<0.3",
        "orbax-checkpoint>=0.12.8,<0.13",
        "ml_dtypes>=0.5,<0.7",
        "scipy>=1.14,<2",
        "seqio>=0.0.20,<0.1",
        "tensorflow>=2.21,<2.22",
        "tensorflow-datasets>=4.9.10,<5",
        "importlib_resources>=6,<8",  # tensorflow-datasets needs it to build datasets
        "grain>=0.2.18,<0.3",
        "array-record>=0.8.6,<0.9",
        "ml-collections>=1.1.0,<2",
        "sentencepiece>=0.2.3,<0.3",
        "tokenizers>=0.23,<0.24",
        "safetensors>=0.8,<0.9",
        "flatbuffers>=24.3,<26",  # jax.export serialization (slm_jax/export/jax_export.py)
        "librosa>=0.11,<1.1",
        "scikit-learn>=1.9,<2",
        "threadpoolctl>=3.1,<4",  # bench/data_pipeline.py (`make bench`)
        "tensorboardX>=2.6,<3",
        "matplotlib>=3.11,<4",
        "absl-py>=2.1,<3",
        "jiwer>=4.0,<5",
    ],
    extras_require={
        "test": ["pytest>=9.2,<10", "pytest-xdist>=3.8,<4"],
        # PyTorch parity tests and the PyTorch peer benchmark. Pin the CPU build.
        "torch": ["torch==2.13.0", "transformers>=5.23,<6"],
        "asr": ["pocketsphinx>=5.1.1,<6"],
        # The viewer for the TensorBoard logs slm-train writes (`make demo` installs it).
        "tensorboard": ["tensorboard>=2.20,<3"],
    },
    entry_points={
        "console_scripts": [
            "slm-train=slm_jax.tools.train:run",
            "slm-data=slm_jax.tools.data:run",
            "slm-export=slm_jax.tools.export:run",
            "slm-generate=slm_jax.tools.generate:run",
            "slm-eval=slm_jax.tools.evaluate:run",
            "slm-sweep=slm_jax.tools.sweep:run",
        ],
    },
)
