# rnntune developer entry points. Every target sets up what it needs.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: setup demo test test-serial test-fast lint format bench clean

setup: $(STAMP)

# torch first and pinned (a CPU build is on disk here; an unpinned torch pulls a CUDA build),
# then the rest from the pinned constraints. Re-runs only when the pins or project change.
$(STAMP): pyproject.toml constraints.txt Makefile
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -c constraints.txt -e '.[dev]'
	# Only the data files of sktime's wheel are read (examples/data/japanese_vowels.py); its
	# pandas<3.1 cap conflicts with our pins, and the package itself is never imported.
	$(BIN)/pip install -q --no-deps sktime==1.2.0
	touch $(STAMP)

demo: setup
	RAY_USAGE_STATS_ENABLED=0 $(BIN)/rnntune run examples/mnist1d.yaml

# Everything: unit, integration (real MLflow, Ray, the service on loopback) and learning tests,
# on two pytest-xdist workers (`worksteal`: a worker that runs out takes the other's queued
# tests); about 15 min on 2 cores, 22 in one process (`make test-serial`).
test: setup
	$(BIN)/python -m pytest -q -n 2 --dist worksteal --durations=15

test-serial: setup
	$(BIN)/python -m pytest -q --durations=15

# The unit tier (about 75 s on 2 cores): no test marked slow, two pytest workers (xdist).
test-fast: setup
	$(BIN)/python -m pytest -q -m "not slow" -n 2

# ruff; the dependency layers and forbidden imports (pyproject's [tool.importlinter]); dead
# code (vulture; its settings and what frameworks call by name are in pyproject.toml).
lint: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/lint-imports --no-cache
	$(BIN)/vulture

format: setup
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

bench: setup
	$(BIN)/python bench/train_overhead.py
	$(BIN)/python bench/reproduce.py
	$(BIN)/python bench/tune_packing.py
	$(BIN)/python bench/tracking_overhead.py
	$(BIN)/python bench/asha_vs_random.py

clean:
	rm -rf runs lightning_logs .pytest_cache .ruff_cache
