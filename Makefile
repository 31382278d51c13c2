# scenetools: `make demo` and `make test` work on a fresh machine; each installs what it needs.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
# torch is pinned: an open range would pull a multi-GB CUDA build.
TORCH  := torch==2.13.0
STAMP  := $(VENV)/.installed
DEV    := $(VENV)/.installed-dev
# The tools on PATH for the example scripts.
TOOLS   = PATH="$(abspath $(BIN)):$$PATH"

.PHONY: install test demo demo-osrt demo-obsurf demo-srn demo-semantic demo-checkpoint demo-checkpoint-osrt demo-checkpoint-obsurf demo-checkpoint-srn bench results clean

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
	$(TOOLS) examples/demo.sh

# The same with OSRT: segmentation panels, FG-ARI in the evaluation.
demo-osrt: install
	DEMO_MODEL=osrt $(TOOLS) examples/demo.sh

# ObSuRF: depth-supervised slots, volume rendering; FG-ARI next to random slots (under 10 minutes).
demo-obsurf: install
	DEMO_MODEL=obsurf $(TOOLS) examples/demo.sh

# SRN on single objects: novel views of training objects and single-shot unseen ones (under 10 minutes).
demo-srn: install
	$(TOOLS) examples/demo-srn.sh

# Semantic SRN from the shipped SRN checkpoint (about 1.5 minutes): a linear head on 30 labelled views, mIoU next
# to the majority class, one unseen object from one view, a segmentation video and point cloud.
demo-semantic: install
	$(TOOLS) examples/demo-semantic.sh

# Reproduces examples/demo-checkpoint/ (hours on a CPU; resumable: run it again to continue).
demo-checkpoint: install
	$(TOOLS) examples/demo-checkpoint.sh

# The same for the OSRT demo checkpoint (examples/demo-checkpoint/osrt-synthetic.pt).
demo-checkpoint-osrt: install
	DEMO_MODEL=osrt $(TOOLS) examples/demo-checkpoint.sh

# The same for the ObSuRF demo checkpoint (examples/demo-checkpoint/obsurf-synthetic.pt).
demo-checkpoint-obsurf: install
	DEMO_MODEL=obsurf $(TOOLS) examples/demo-checkpoint.sh

# The same for the SRN demo checkpoint (examples/demo-checkpoint/srn-synthetic.pt).
demo-checkpoint-srn: install
	DEMO_MODEL=srn $(TOOLS) examples/demo-checkpoint.sh

# Reproducing the papers (README): one target per published result, a pipeline of the tools
# (examples/reproduce.sh): make reproduce-srt-nmr DATA=~/NMR_Dataset GPUS=8 [OUT=...]
# [ACCUMULATE=N|auto] [STEPS=N]. Run it again to continue. `make results` tabulates OUT.
# Each has a -smoke twin on a tiny dataset in the real layout (tests/fixtures); make test runs them.
ROWS      := srt-nmr srt-msn isrt-msn osrt-clevr3d osrt-msn-hard obsurf-clevr3d obsurf-msn srn-cars srn-chairs \
             semantic-chairs semantic-tables semantic-srn-chairs semantic-srn-tables
REPRODUCE := $(addprefix reproduce-,$(ROWS))
SMOKES    := $(addsuffix -smoke,$(REPRODUCE))
OUT       ?= outputs/reproduce
SMOKE_OUT ?= outputs/reproduce-smoke
GPUS      ?= 1
.PHONY: $(REPRODUCE) $(SMOKES)

$(REPRODUCE): reproduce-%: install
	@test -n "$(DATA)" || { echo "make $@: DATA=<the downloaded dataset> is required (README: Reproducing the papers)" >&2; exit 2; }
	$(TOOLS) DATA="$(DATA)" GPUS="$(GPUS)" OUT="$(OUT)" examples/reproduce.sh $*
	$(BIN)/python -m scenetools.results "$(OUT)"

$(SMOKES): reproduce-%-smoke: $(DEV)
	rm -rf "$(SMOKE_OUT)/$*"
	set -- $$($(BIN)/python -m tests.fixtures.smoke $* "$(SMOKE_OUT)/datasets") && data="$$1" && shift && \
	    $(TOOLS) SMOKE=1 DATA="$$data" CONVERT_ARGS="$$*" OUT="$(SMOKE_OUT)" examples/reproduce.sh $*
	$(BIN)/python -m scenetools.results "$(SMOKE_OUT)"

results:
	$(BIN)/python -m scenetools.results "$(OUT)"

# Benchmarks, JSON into bench/results/. REF=DIR also times the reference implementations
# (DIR/srt, DIR/osrt, DIR/obsurf: stelzner's repositories; DIR/srn: vsitzmann's
# scene-representation-networks with its pytorch_prototyping submodule; unpacked by you)
# against ours in the same run, after installing what they import (bench/ref_requirements.txt).
bench: install
	$(if $(REF),$(BIN)/pip install --quiet -r bench/ref_requirements.txt)
	@for script in bench/bench_*.py; do echo "== $$script"; BENCH_REF="$(REF)" $(BIN)/python $$script || exit 1; done

clean:
	rm -rf $(VENV) outputs bench/results .pytest_cache *.egg-info
