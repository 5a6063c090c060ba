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

# The plugin's widget tests need an X server (Xvfb) and the X/GL libraries PyQt6's wheel (the [pyqt6] extra) links
# against; on Debian 12 exactly these packages were missing from a plain image (checked with ldd on Qt's libqxcb.so, which
# lists its libraries' libraries too; Qt >= 6.5 also needs libxcb-cursor0).
QT_APT_PACKAGES := xvfb xauth libgl1 libgl1-mesa-dri libegl1 libglib2.0-0 libfontconfig1 libdbus-1-3 libxkbcommon-x11-0 \
	libx11-xcb1 libxcb-cursor0 libxcb-icccm4 libxcb-image0 libxcb-keysyms1 libxcb-randr0 libxcb-render-util0 \
	libxcb-shape0 libxcb-xkb1 libxcb-xfixes0 libxcb-sync1 libxcb-shm0 libxcb-util1
QT_PLATFORM_PLUGIN = $(VENV)/lib/python3*/site-packages/PyQt6/Qt6/plugins/platforms/libqxcb.so

.PHONY: demo test install xvfb lint check-wheels

install: $(STAMP)

$(STAMP): pyproject.toml backend/pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	# Pin torch first: an unpinned resolution would pull a multi-GB CUDA build.
	$(PY) -m pip install --quiet torch==2.13.0
	# The plugin names no Qt binding (napari's rule for plugins); set-up installs PyQt6, napari's default binding.
	$(PY) -m pip install --quiet -e ./backend -e ".[test,pyqt6]"
	$(PY) -c "import torch; assert torch.__version__.startswith('2.13.0'), 'torch was replaced: ' + torch.__version__"
	touch $(STAMP)

demo: $(STAMP)
	ALIGNFLOW_WEIGHTS_DIR=$(WEIGHTS_DIR) $(VENV)/bin/alignflow augment --demo --out runs/demo

# Installs the X libraries only when something is missing (apt-get needs root; a desktop has them already).
xvfb: $(STAMP)
	@if ! command -v xvfb-run >/dev/null || ldd $(QT_PLATFORM_PLUGIN) | grep -q "not found"; then \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $(QT_APT_PACKAGES); \
	fi

# Lint (the pre-commit hook's ruff) and the packaging check run with the tests, so CI runs all three.
lint: $(STAMP)
	$(VENV)/bin/ruff check backend napari_alignflow tests benchmarks docs tools

# Both wheels built and installed into a fresh venv (build/wheel-venv; its dependencies are reused until the
# pyproject files change): napari's npe2 finds the manifest and `alignflow --help` runs from the wheel.
check-wheels: $(STAMP)
	tools/check_wheels.sh $(PYTHON) build/wheel-venv

# Two pytest workers of one torch thread each (pytest-xdist): the suite takes half the time on a 2-core machine, and a
# worker never competes with its own threads (more torch threads than cores slow a training step many times over).
TEST_WORKERS ?= 2
test: $(STAMP) xvfb lint check-wheels
	OMP_NUM_THREADS=1 ALIGNFLOW_SHARED=$(SHARED) ALIGNFLOW_WEIGHTS_DIR=$(SHARED)/weights xvfb-run -a -s "-screen 0 1600x1000x24" \
		$(PY) -m pytest tests -q -n $(TEST_WORKERS) --durations=15
