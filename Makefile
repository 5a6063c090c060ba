# Two commands do everything on a fresh machine (Python 3.11 + pip):
#   make demo   set up .venv and run the main job on the bundled phantom (CPU if no GPU, offline)
#   make test   set up .venv and run the test suite (real data and weights from ../shared)
VENV ?= .venv
PYTHON ?= python3
SHARED ?= $(abspath ../shared)
# Weights: an explicit $ALIGNFLOW_WEIGHTS_DIR wins, then ../shared/weights if present; else pooch downloads them.
WEIGHTS_DIR := $(or $(ALIGNFLOW_WEIGHTS_DIR),$(wildcard $(SHARED)/weights))
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: demo test install

install: $(STAMP)

$(STAMP): pyproject.toml backend/pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	# Pin torch first: an unpinned resolution would pull a multi-GB CUDA build.
	$(PY) -m pip install --quiet torch==2.13.0
	$(PY) -m pip install --quiet -e ./backend -e ".[test]"
	$(PY) -c "import torch; assert torch.__version__.startswith('2.13.0'), 'torch was replaced: ' + torch.__version__"
	touch $(STAMP)

demo: $(STAMP)
	ALIGNFLOW_WEIGHTS_DIR=$(WEIGHTS_DIR) $(VENV)/bin/alignflow augment --demo --out runs/demo

test: $(STAMP)
	ALIGNFLOW_SHARED=$(SHARED) ALIGNFLOW_WEIGHTS_DIR=$(SHARED)/weights $(PY) -m pytest tests -q
