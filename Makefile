# The README's quickstart: `make run` and `make test`. Both create .venv on first use.
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: run test lint bench clean

$(STAMP): pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[dev]'
	touch $(STAMP)

run: $(STAMP)
	$(BIN)/modelkit train --out runs/quickstart --overwrite

test: $(STAMP)
	$(BIN)/python -m pytest -n auto --dist loadfile

# pre-commit (ruff, formatting, hygiene) on every file, then actionlint on the workflows
lint: $(STAMP)
	$(BIN)/pre-commit run --all-files --show-diff-on-failure
	PATH="$(abspath $(BIN)):$$PATH" $(BIN)/actionlint

bench: $(STAMP)
	$(BIN)/python -m pytest benchmarks --benchmark-only

clean:
	rm -rf $(VENV) runs .pytest_cache .benchmarks
