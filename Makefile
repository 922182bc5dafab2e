# First use creates .venv and installs cxrlens into it; later calls reuse it.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp

.PHONY: setup quickstart test bench clean-venv

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e ".[dev]"
	touch $(STAMP)

setup: $(STAMP)

# The main job on the sample data (see README); grows into the full pipeline with the models.
quickstart: $(STAMP)
	$(BIN)/cxrlens data prepare sample --out cache/sample-256 --size 256
	$(BIN)/cxrlens data inspect sample

test: $(STAMP)
	$(BIN)/python -m pytest -n 2 tests

bench: $(STAMP)
	$(BIN)/python benchmarks/cache_throughput.py

clean-venv:
	rm -rf $(VENV)
