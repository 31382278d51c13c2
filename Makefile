# scenetools: `make demo` and `make test` work on a fresh machine; each installs what it needs.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
# torch is pinned: an open range would pull a multi-GB CUDA build.
TORCH  := torch==2.13.0
STAMP  := $(VENV)/.installed
DEV    := $(VENV)/.installed-dev

.PHONY: install test demo demo-osrt demo-obsurf demo-checkpoint bench clean

# The tools alone; `make test` adds what the tests need (pytest, scikit-learn, tensorflow-cpu).
install: $(STAMP)

$(STAMP): setup.cfg pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet $(TORCH)
	$(BIN)/pip install --quiet -e .
	touch $@

$(DEV): $(STAMP)
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $@

# Two workers, one file each at a time (files share their trained fixtures), a thread each.
test: $(DEV)
	$(BIN)/python -m pytest -q -n 2 --dist loadfile

demo: install
	PATH="$(CURDIR)/$(BIN):$$PATH" examples/demo.sh

# The same with OSRT: segmentation panels, FG-ARI in the evaluation.
demo-osrt: install
	DEMO_MODEL=osrt PATH="$(CURDIR)/$(BIN):$$PATH" examples/demo.sh

# ObSuRF: depth-supervised slots, volume rendering; FG-ARI next to random slots (under 10 minutes).
demo-obsurf: install
	DEMO_MODEL=obsurf PATH="$(CURDIR)/$(BIN):$$PATH" examples/demo.sh

# Reproduces examples/demo-checkpoint/ (hours on a CPU; resumable: run it again to continue).
demo-checkpoint: install
	PATH="$(CURDIR)/$(BIN):$$PATH" examples/demo-checkpoint.sh

# Benchmarks, JSON into bench/results/. REF=DIR also times the reference implementations
# (DIR/srt, DIR/osrt, DIR/obsurf: stelzner's repositories, unpacked by you) against ours in
# the same run, after installing what they import (bench/ref_requirements.txt).
bench: install
	$(if $(REF),$(BIN)/pip install --quiet -r bench/ref_requirements.txt)
	@for script in bench/bench_*.py; do echo "== $$script"; BENCH_REF="$(REF)" $(BIN)/python $$script || exit 1; done

clean:
	rm -rf $(VENV) outputs bench/results .pytest_cache *.egg-info
