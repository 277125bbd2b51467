# Two commands do everything on a fresh machine:
#   make demo   installs edgekd in .venv and runs the default pipeline end to end
#   make test   runs the test suite on both tested installs:
#                 test-pinned  .venv, the pinned dependencies (transformers 4.57, optimum's ONNX exporter)
#                 test-tf5     .venv-tf5, transformers 5 without optimum (optimum-onnx caps transformers
#                              below 4.58), so export goes through torch.onnx; ci/tf5-requirements.txt
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
TF5_VENV ?= .venv-tf5
TF5_BIN := $(TF5_VENV)/bin
PIPELINE ?= pipelines/minilm-rotten-tomatoes.yaml

.PHONY: install install-tf5 demo test test-pinned test-tf5 test-slow bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

install: $(BIN)/python
	$(BIN)/python -m pip install --quiet -e ".[test]"

demo: install
	$(BIN)/edgekd run $(PIPELINE)

test: test-pinned test-tf5

test-pinned: install
	$(BIN)/python -m pytest -q

$(TF5_BIN)/python:
	$(PYTHON) -m venv $(TF5_VENV)
	$(TF5_BIN)/python -m pip install --quiet --upgrade pip

# Dependencies first, then edgekd without its own (which would pull transformers 4.57 and optimum back in).
install-tf5: $(TF5_BIN)/python
	$(TF5_BIN)/python -m pip install --quiet -r ci/tf5-requirements.txt
	$(TF5_BIN)/python -m pip install --quiet --no-deps -e .

test-tf5: install-tf5
	$(TF5_BIN)/python -m pytest -q

test-slow: install
	$(BIN)/python -m pytest -q -m "slow or network"

bench: install
	$(BIN)/python benchmarks/run_default.py --fresh

clean:
	rm -rf $(VENV) $(TF5_VENV) runs .pytest_cache
