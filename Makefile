# scenetools: `make demo` and `make test` work on a fresh machine; each installs what it needs.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
# torch is pinned: an open range would pull a multi-GB CUDA build.
TORCH  := torch==2.13.0
STAMP  := $(VENV)/.installed

.PHONY: install test demo demo-osrt demo-checkpoint bench clean

install: $(STAMP)

$(STAMP): setup.cfg pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet $(TORCH)
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $@

test: install
	$(BIN)/python -m pytest -q

demo: install
	PATH="$(CURDIR)/$(BIN):$$PATH" examples/demo.sh

# The same with OSRT: segmentation panels, FG-ARI in the evaluation.
demo-osrt: install
	DEMO_MODEL=osrt PATH="$(CURDIR)/$(BIN):$$PATH" examples/demo.sh

# Reproduces examples/demo-checkpoint/ (hours on a CPU; resumable: run it again to continue).
demo-checkpoint: install
	PATH="$(CURDIR)/$(BIN):$$PATH" examples/demo-checkpoint.sh

bench: install
	@for script in bench/bench_*.py; do echo "== $$script"; $(BIN)/python $$script || exit 1; done

clean:
	rm -rf $(VENV) outputs bench/results .pytest_cache *.egg-info
