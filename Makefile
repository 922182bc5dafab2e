# First use creates .venv and installs cxrlens into it; later calls reuse it.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp

.PHONY: setup quickstart test fuzz bench reproduction docs clean-venv

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e ".[dev]"
	touch $(STAMP)

setup: $(STAMP)

# The main job on the real sample X-rays: SimCLR -> Kermany linear eval, NIH fine-tune -> runs/quickstart/*/report.html
quickstart: $(STAMP)
	$(BIN)/cxrlens quickstart

test: $(STAMP)
	$(BIN)/python -m pytest -n 2 tests

# The image-reader fuzz test, long and random (the suite runs a short, fixed one)
fuzz: $(STAMP)
	CXRLENS_FUZZ_EXAMPLES=20000 $(BIN)/python -m pytest -q tests/test_fuzz.py

bench: $(STAMP)
	$(BIN)/python benchmarks/cache_throughput.py
	$(BIN)/python benchmarks/cam_throughput.py
	$(BIN)/python benchmarks/cam_loss_iou.py
	$(BIN)/python benchmarks/latency.py
	$(BIN)/python benchmarks/training_precision.py
	$(BIN)/python benchmarks/metrics_speed.py

# The quickstart's claims over 3 seeds -> docs/evidence.md (about 30 min on 2 cores)
evidence: $(STAMP)
	$(BIN)/python benchmarks/learning.py --seeds 0 1 2

# Every paper config in smoke mode, and docs/reproduction.md from their summaries
reproduction: $(STAMP)
	$(BIN)/python benchmarks/reproduction_table.py

# docs/deviations.md, generated from the code and the configs (a test fails when it is out of date), then the
# documentation site (guides, evidence, API reference from the docstrings) into site/, warnings as errors
docs: $(STAMP)
	$(BIN)/python -m cxrlens.deviations docs/deviations.md
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict

clean-venv:
	rm -rf $(VENV)
