# The two commands a newcomer needs: `make demo` (the main job) and `make test` (the suite).
# Both create or reuse .venv and install what they need (Debian packages included).
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
DEMO_STAMP := $(VENV)/.installed-demo
CORPUS_STAMP := $(VENV)/.installed-corpus
APT_PACKAGES := flite espeak-ng fortunes pocketsphinx-testdata libsndfile1 libtcmalloc-minimal4
WORKDIR ?= runs/demo
# The demo corpus: where and how big (make demo-long sets its own).
CORPUS_ARGS ?=
TEST_ARGS ?=
# pytest-xdist workers; each test file runs whole on one worker (module fixtures shared).
TEST_WORKERS ?= 2
# XLA:CPU allocates and frees its large step buffers every step; glibc's malloc returns them to
# the kernel (mmap/munmap), so each step pays for millions of page faults. tcmalloc keeps them:
# the demo's train step measured 13-20% faster (BENCHMARKS.md, "Train step"). Preloaded into
# every command below when Debian's libtcmalloc-minimal4 is installed (`make apt` installs it);
# `TCMALLOC=` turns it off. Its report of allocations over 1 GiB is silenced.
TCMALLOC ?= $(firstword $(wildcard /usr/lib/*/libtcmalloc_minimal.so.4 /usr/lib/libtcmalloc_minimal.so.4))
RUN = $(if $(TCMALLOC),LD_PRELOAD=$(TCMALLOC) TCMALLOC_LARGE_ALLOC_REPORT_THRESHOLD=1099511627776,)

.PHONY: demo demo-long demo-corpus test test-fast bench setup apt clean

setup: $(STAMP)

# Debian packages used for the demo corpus and audio I/O (skipped when all are present).
apt:
	@missing=""; for p in $(APT_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  echo "installing Debian packages:$$missing"; \
	  SUDO=""; [ "$$(id -u)" = 0 ] || SUDO=sudo; \
	  $$SUDO apt-get update -q && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -q $$missing; \
	fi

# The venv with what the demo corpus builder needs (requirements-corpus.txt): `make demo` builds
# the corpus on it while pip installs the rest.
$(CORPUS_STAMP): requirements-corpus.txt | apt
	@$(PYTHON) -c 'import sys; assert sys.version_info >= (3, 11), "slm_jax needs Python >= 3.11"'
	[ -x $(PY) ] || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -r requirements-corpus.txt
	touch $@

# extras: test (pytest), torch (parity tests), asr (pocketsphinx), tensorboard (the viewer the
# demo summary names). The demo needs only asr and tensorboard (no torch: a faster first run);
# the full install serves both.
$(STAMP): setup.py requirements-corpus.txt | $(CORPUS_STAMP)
	$(PY) -m pip install -q -e '.[test,torch,asr,tensorboard]'
	touch $@ $(DEMO_STAMP)

$(DEMO_STAMP): setup.py requirements-corpus.txt | $(CORPUS_STAMP)
	$(PY) -m pip install -q -e '.[asr,tensorboard]'
	touch $@

# The main job: corpus, tokenizers, caches, training, evaluation, export, generation, report.
# On a new machine the corpus (flite, both cores) is built while pip installs the rest (one
# core): one `make -j2` of the two, then the demo finds the corpus present.
demo: apt
	$(MAKE) --no-print-directory -j2 $(DEMO_STAMP) demo-corpus
	$(RUN) $(PY) -m slm_jax.tools.demo --workdir=$(WORKDIR) $(CORPUS_ARGS)

# The demo model trained about 4x longer on every fortunes sentence read in two voices (about 2
# hours on 2 cores, corpus included), with whole-sentence TTS (the mixture its README results
# were measured with); ASR scored on the first 400 test utterances.
demo-long: CORPUS_ARGS = --corpus_dir=data/demo_corpus_long2 --sentences=8645 --voices_per_sentence=2
demo-long: apt
	$(MAKE) --no-print-directory -j2 $(DEMO_STAMP) demo-corpus CORPUS_ARGS="$(CORPUS_ARGS)"
	$(RUN) $(PY) -m slm_jax.tools.demo --workdir=runs/demo_long --gin_file=runs/demo_long.gin \
	  $(CORPUS_ARGS) --test_utterances=400 --joint_ctc_weight=0.3 --beam_size=8 \
	  --gin_param="include 'tasks/demo_main_whole.gin'"

# Stage 1 of the demo alone (kept when present); needs only requirements-corpus.txt.
demo-corpus: $(CORPUS_STAMP)
	$(PY) -m slm_jax.tools.demo --corpus_only $(CORPUS_ARGS)

# The whole CPU suite (693 tests, 8-29 min on 2 cores by the day's machine), slow and multi-process
# tests included.
test: apt $(STAMP)
	$(RUN) $(PY) -m pytest -q -n $(TEST_WORKERS) --dist loadfile --durations=15 -m "not gpu and not tpu" $(TEST_ARGS)

# Without the tests marked slow.
test-fast: apt $(STAMP)
	$(RUN) $(PY) -m pytest -q -n $(TEST_WORKERS) --dist loadfile -m "not slow and not gpu and not tpu" $(TEST_ARGS)

bench: $(STAMP)
	$(RUN) $(PY) bench/train_step.py
	$(RUN) $(PY) bench/data_pipeline.py
	$(RUN) $(PY) bench/speech_resynthesis.py

clean:
	rm -rf $(VENV)
