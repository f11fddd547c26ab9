# Two entry points, each doing all the set-up on a fresh machine:
#   make quickstart   – install, train the quickstart (LoRA vs QLoRA vs full), compare, report
#   make test         – install, then run the test suite
# On a machine without a GPU the CPU build of torch is installed first, so nothing pulls
# CUDA wheels (see DEVELOPERS.md). Override with TORCH_SPEC="torch==X --index-url …".
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
TORCH_SPEC ?= $(if $(shell command -v nvidia-smi),torch>=2.4,torch==2.13.0)

.PHONY: setup setup-dev services quickstart test test-fast lint gpu-test clean

# The sweep tests start a throwaway PostgreSQL server (Debian's postgresql package); as
# root with apt-get, install it when missing. Elsewhere that test fails saying how to get it.
services:
	@ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || command -v initdb >/dev/null || \
	  { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null && \
	    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql) \
	    || echo "note: PostgreSQL server not installed (apt-get install postgresql); the PostgreSQL sweep test needs it"; }
	@command -v chromium >/dev/null || \
	  { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null && \
	    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium) \
	    || echo "note: Chromium not installed (apt-get install chromium); the HTML report test needs it"; }

# setup: what running experiments needs (the quickstart); setup-dev adds the test and
# lint tools and the MLflow server the tests start (about a minute and a half more here).
setup: $(VENV)/.installed

# pip compiles the installed modules to bytecode on one core; compileall does it on all
# of them afterwards (half a minute less here). It fails on files written for a newer
# Python (torch ships one in its test helpers), which pip skips silently too.
$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --no-compile "$(TORCH_SPEC)"
	$(BIN)/pip install --quiet --no-compile -e .
	$(BIN)/python -m compileall -q -j 0 $(VENV)/lib >/dev/null 2>&1 || true
	touch $@

setup-dev: $(VENV)/.installed-dev

$(VENV)/.installed-dev: $(VENV)/.installed
	$(BIN)/pip install --quiet --no-compile -e ".[dev]"
	$(BIN)/python -m compileall -q -j 0 $(VENV)/lib >/dev/null 2>&1 || true
	touch $@

quickstart: setup
	$(BIN)/ftlab run experiments/quickstart.yaml
	$(BIN)/ftlab compare
	$(BIN)/ftlab report

test: setup-dev services
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy cli runner evals sweeps reports
	$(BIN)/python -m pytest -m "not gpu" -q --durations=15

# The quick loop while developing: everything but the tests that train (integration),
# run for minutes (slow) or need CUDA (gpu).
test-fast: setup-dev
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy cli runner evals sweeps reports
	$(BIN)/python -m pytest -m "not gpu and not slow and not integration" -q

lint: setup-dev
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy cli runner evals sweeps reports

gpu-test: setup-dev
	$(BIN)/python -m pytest -m gpu -q -s

clean:
	rm -rf $(VENV) runs .pytest_cache
