"""slm_jax: JAX-native training of speech-text language models."""
import setuptools

setuptools.setup(
    name="slm_jax",
    version="0.1.0",
    description="JAX-native training of speech-text language models (shared decoder / Zipper).",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    python_requires=">=3.11",
    packages=setuptools.find_packages(include=["slm_jax", "slm_jax.*"]) + ["slm_jax.tasks"],
    # seqio Task/Mixture registrations live in the top-level tasks/ folder (DESIGN.md layout)
    # and are importable as `slm_jax.tasks`.
    package_dir={"slm_jax.tasks": "tasks"},
    install_requires=[
        # Tested: jax 0.10.2 (py3.11) and 0.12 (py3.12); flax 0.12.8.
        "jax>=0.10.2,<0.13",
        "flax>=0.12.8,<0.14",
        "optax>=0.2.8,<0.3",
        "orbax-checkpoint>=0.12.8,<0.13",
        "seqio>=0.0.20,<0.1",
        "tensorflow-datasets>=4.9.10,<5",
        "tensorflow>=2.21,<2.22",
        "grain>=0.2.18,<0.3",
        "array-record>=0.8.6,<0.9",
        "ml-collections>=1.1.0,<2",
        "gin-config>=0.5.0,<0.6",
        "sentencepiece>=0.2.3,<0.3",
        "tokenizers>=0.23,<0.24",
        "numpy>=2.0,<3",
        "safetensors>=0.8,<0.9",
        "soundfile>=0.14,<0.15",
        "librosa>=0.11,<1.1",
        "scikit-learn>=1.9,<2",
        "tensorboardX>=2.6,<3",
        "matplotlib>=3.11,<4",
        "tqdm>=4.70,<5",
        "jiwer>=4.0,<5",
        "importlib_resources>=6,<8",  # tfds 4.9.10 needs it to build datasets
    ],
    extras_require={
        "test": ["pytest>=9.2,<10", "pytest-xdist>=3.8,<4"],
        # PyTorch parity tests and the PyTorch peer benchmark. Pin the CPU build.
        "torch": ["torch==2.13.0", "transformers>=5.23,<6"],
        "asr": ["pocketsphinx>=5.1.1,<6"],
    },
    entry_points={
        "console_scripts": [
            "slm-train=slm_jax.tools.train:run",
            "slm-data=slm_jax.tools.data:run",
        ],
    },
)
