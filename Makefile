# Two entry points, each doing all the set-up on a fresh machine:
#   make quickstart   – install, then train the quickstart (LoRA vs QLoRA vs full)
#   make test         – install, then run the test suite
# On a machine without a GPU the CPU build of torch is installed first, so nothing pulls
# CUDA wheels (see DEVELOPERS.md). Override with TORCH_SPEC="torch==X --index-url …".
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
TORCH_SPEC ?= $(if $(shell command -v nvidia-smi),torch>=2.4,torch==2.13.0)

.PHONY: setup quickstart test test-fast lint gpu-test clean

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet "$(TORCH_SPEC)"
	$(BIN)/pip install --quiet -e ".[dev]"
	touch $@

quickstart: setup
	$(BIN)/ftlab run experiments/quickstart.yaml

test: setup
	$(BIN)/ruff check .
	$(BIN)/mypy runner evals sweeps reports
	$(BIN)/python -m pytest -m "not gpu" -q

lint: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy runner evals sweeps reports

gpu-test: setup
	$(BIN)/python -m pytest -m gpu -q -s

clean:
	rm -rf $(VENV) runs .pytest_cache
