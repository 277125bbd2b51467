# Two commands do everything on a fresh machine:
#   make demo   installs edgekd in .venv and runs the default pipeline end to end
#   make test   installs edgekd with its test extras in .venv and runs the test suite
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
PIPELINE ?= pipelines/minilm-rotten-tomatoes.yaml

.PHONY: install demo test test-slow bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

install: $(BIN)/python
	$(BIN)/python -m pip install --quiet -e ".[test]"

demo: install
	$(BIN)/edgekd run $(PIPELINE)

test: install
	$(BIN)/python -m pytest -q

test-slow: install
	$(BIN)/python -m pytest -q -m slow

bench: install
	$(BIN)/python benchmarks/run_default.py

clean:
	rm -rf $(VENV) runs .pytest_cache
