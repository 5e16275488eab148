# The README's two commands: `make demo` and `make test`. Both create .venv on first use.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
STORE  ?= ste-store
# pytest-xdist processes for the test suites (tests train on one thread; conftest makes idle OpenMP threads sleep)
TEST_WORKERS ?= 2
# extra pytest arguments for test-slurm (.ci/run gives it its own temp folder)
PYTEST_EXTRA ?=
export PYTHONHASHSEED := 0

.PHONY: all venv demo test test-slow test-slurm lint format figures bench clean

all: test

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	@echo "installing ste-ablations and its dependencies (torch is large: a few minutes the first time)"
	$(PY) -m pip install --progress-bar on -e '.[dev]'
	touch $(STAMP)

venv: $(STAMP)

## demo: train the quick start grid on the bundled mnist-mini (offline W&B), analyse it, print the report path
demo: $(STAMP)
	WANDB_MODE=offline $(VENV)/bin/ste-ablate run ablations/quickstart.yaml --store $(STORE) --wandb offline --workers 2
	$(VENV)/bin/ste-ablate analyze ablations/quickstart.yaml --store $(STORE) --out reports/quickstart

## test: the CPU suite without the long tests, about 3 minutes (what CI runs first)
test: $(STAMP)
	$(PY) -m pytest -q -n $(TEST_WORKERS) --dist loadfile

## test-slow: the long tests (integration through the CLI, kill/resume, chaos, golden values, benchmark smoke tests); CI runs them
## (in TEST_WORKERS processes, then the kill and signal tests timed against a training process alone)
test-slow: $(STAMP)
	$(PY) -m pytest -q -m "slow and not serial" -n $(TEST_WORKERS) --dist worksteal
	$(PY) -m pytest -q -m "slow and serial"

## test-slurm: the tests that need the local SLURM cluster (scripts/slurm-local.sh start)
test-slurm: $(STAMP)
	$(PY) -m pytest -q -m slurm $(PYTEST_EXTRA)

## lint: ruff (lint and format) and the layer contracts (import-linter, pyproject.toml)
lint: $(STAMP)
	$(VENV)/bin/ruff check ste_variants runners analysis tests scripts benchmarks
	$(VENV)/bin/ruff format --check ste_variants runners analysis tests scripts benchmarks
	$(VENV)/bin/lint-imports

format: $(STAMP)
	$(VENV)/bin/ruff format ste_variants runners analysis tests scripts benchmarks

## figures: regenerate every paper figure and table from committed snapshots (no training)
figures: $(STAMP)
	$(VENV)/bin/ste-ablate figures paper/figures.yaml

bench: $(STAMP)
	$(VENV)/bin/ste-ablate bench

clean:
	rm -rf $(STORE) reports .pytest_cache
