# Two entry points that work on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

export PREFECT_SERVER_ANALYTICS_ENABLED ?= false

.PHONY: demo test lint bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

# Reinstall only when the declared dependencies change.
$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e ".[flows,dev]"
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/ooc run --rows 3000000 --workdir .demo

test: $(STAMP)
	$(BIN)/python -m pytest

lint: $(STAMP)
	$(BIN)/ruff check ooc tasks flows tests bench
	$(BIN)/ruff format --check ooc tasks flows tests bench

bench: $(STAMP)
	$(BIN)/python -m pip install --quiet -e ".[flows,dev,bench]"
	$(BIN)/python -m bench

clean:
	rm -rf $(VENV) .demo .pytest_cache
