# Two commands do everything on a fresh machine:
#   make demo   installs edgekd in .venv and runs the default pipeline end to end
#   make test   runs the test suite on the tested installs:
#                 test-pinned  .venv, the pinned dependencies (transformers 4.57, optimum's ONNX exporter)
#                 test-mobile  .venv-mobile, the same plus the phone runtimes ExecuTorch and LiteRT (their own
#                              environment: LiteRT needs pydantic < 2.11), running the mobile stage's tests
#                 test-tf5     .venv-tf5, transformers 5 without optimum (optimum-onnx caps transformers
#                              below 4.58), so export goes through torch.onnx; ci/tf5-requirements.txt
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
TF5_VENV ?= .venv-tf5
TF5_BIN := $(TF5_VENV)/bin
MOBILE_VENV ?= .venv-mobile
MOBILE_BIN := $(MOBILE_VENV)/bin
PIPELINE ?= pipelines/minilm-rotten-tomatoes.yaml

.PHONY: install install-mobile install-tf5 demo test test-pinned test-tf5 test-mobile test-slow bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

install: $(BIN)/python
	$(BIN)/python -m pip install --quiet -e ".[test]"

demo: install
	$(BIN)/edgekd run $(PIPELINE)

test: test-pinned test-tf5 test-mobile

# Two steps: one resolve of both extras fails on typing-extensions (executorch's coremltools wants >= 4.14 through
# cattrs, only for Core ML; litert-torch's converter wants < 4.13). The second step keeps edgekd's pins, which
# litert-torch would otherwise move (it pulls transformers 5); pip then names the cattrs mismatch and goes on.
$(MOBILE_BIN)/python:
	$(PYTHON) -m venv $(MOBILE_VENV)
	$(MOBILE_BIN)/python -m pip install --quiet --upgrade pip

install-mobile: $(MOBILE_BIN)/python
	$(MOBILE_BIN)/python -m pip install --quiet -e ".[test,executorch]"
	$(MOBILE_BIN)/python -m pip install --quiet -e ".[litert]" "transformers==4.57.6" "tokenizers<0.23"

test-mobile: install-mobile
	$(MOBILE_BIN)/python -m pytest -q tests/unit/test_mobile_ort.py tests/unit/test_mobile_executorch.py \
		tests/unit/test_mobile_litert.py tests/integration/test_mobile_pipeline.py

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

# The committed benchmark has a row for every runtime, so it runs where ExecuTorch and LiteRT are installed.
bench: install-mobile
	$(MOBILE_BIN)/python benchmarks/run_default.py --fresh

clean:
	rm -rf $(VENV) $(TF5_VENV) $(MOBILE_VENV) runs .pytest_cache
