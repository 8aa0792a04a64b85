# warmstart developer commands. `make demo` then `make test` is the whole quick start.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
export TOKENIZERS_PARALLELISM := false

.PHONY: install demo test test-fast lint bench clean

install: $(STAMP)

# torch is pinned in the same pip call so the resolver takes the local CPU build and never the CUDA one.
$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --upgrade pip setuptools wheel
	$(BIN)/pip install "torch==2.13.0" -e ".[dev]"
	@if $(BIN)/pip list 2>/dev/null | grep -qi '^nvidia-'; then echo "CUDA packages were pulled in; aborting" >&2; exit 1; fi
	touch $(STAMP)

demo: install
	$(BIN)/warmstart demo

test: install
	$(BIN)/pytest -q

test-fast: install
	$(BIN)/pytest -q -m "not slow"

lint: install
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/ruff format --check src tests benchmarks
	$(BIN)/mypy

bench: install
	$(BIN)/python benchmarks/bench_core.py

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
