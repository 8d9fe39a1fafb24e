# Every target creates .venv when it is missing and installs unetkit with the pinned, tested versions.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
PIP    := $(BIN)/python -m pip
DEPS   := pyproject.toml constraints.txt
CAREAMICS := .venv-careamics

.PHONY: install demo test test-slow bench lint format clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip

$(VENV)/.installed: $(BIN)/python $(DEPS)
	$(PIP) install -q -c constraints.txt -e '.[all,dev,napari]'
	touch $@

$(VENV)/.installed-bench: $(VENV)/.installed
	$(PIP) install -q -c constraints.txt -e '.[all,dev,napari,bench]'
	touch $@

# CAREamics, restore.py's peer, needs torchvision, which does not import beside the CPU torch: its own venv.
$(CAREAMICS)/.installed: benchmarks/careamics-requirements.txt
	$(PYTHON) -m venv $(CAREAMICS)
	$(CAREAMICS)/bin/python -m pip install -q --upgrade pip
	$(CAREAMICS)/bin/python -m pip install -q -r benchmarks/careamics-requirements.txt
	touch $@

install: $(VENV)/.installed

demo: install  ## the main job on the built-in default (no download)
	$(BIN)/unetkit demo --out runs/demo

test: install  ## the default test run (a few minutes on 2 cores)
	$(BIN)/python -m pytest -q

test-slow: install  ## the slow tests (multi-process DDP, long runs)
	$(BIN)/python -m pytest -q -m slow

bench: $(VENV)/.installed-bench $(CAREAMICS)/.installed  ## side-by-side benchmarks against the peers; writes benchmarks/results/
	$(BIN)/python benchmarks/run_all.py

lint: install
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/ruff format --check src tests benchmarks
	$(BIN)/mypy
	$(BIN)/lint-imports

format: install
	$(BIN)/ruff format src tests benchmarks
	$(BIN)/ruff check --fix src tests benchmarks

clean:
	rm -rf $(VENV) $(CAREAMICS) build dist *.egg-info .pytest_cache .mypy_cache .ruff_cache
