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
	# LightFM 1.17 (a benchmark baseline) only builds through pip's legacy setup.py path, which pip
	# 24+ removed: build it with pip 23.2.1 first, then upgrade pip for everything else.
	$(BIN)/pip install "pip==23.2.1" setuptools wheel "numpy>=1.26" "scipy>=1.11"
	$(BIN)/pip install --no-build-isolation lightfm==1.17
	$(BIN)/pip install --upgrade pip setuptools wheel
	$(BIN)/pip install "torch==2.13.0" -e ".[dev,ray]"
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
	$(BIN)/lint-imports

bench: install
	$(BIN)/python benchmarks/bench_core.py
	$(BIN)/python benchmarks/bench_encoder.py --output runs/encoder.json
	$(BIN)/warmstart evaluate --dataset citeulike-a --protocol cold-item --split dropoutnet --output runs/citeulike-cold-item.json
	for p in cold-user cold-item warm; do \
	  $(BIN)/warmstart evaluate --dataset ml-100k --min-rating 4 --protocol $$p --output runs/ml100k-$$p.json || exit 1; \
	done
	$(BIN)/warmstart evaluate --dataset ml-100k --protocol cold-user --output runs/ml100k-all-cold-user.json
	for d in ml-100k-sparse citeulike-a-sparse; do for p in warm cold-user cold-item; do \
	  $(BIN)/warmstart evaluate --dataset $$d --protocol $$p --output runs/$$d-$$p.json || exit 1; \
	done; done
	$(BIN)/python benchmarks/bench_fit_small.py --output runs/fit-small.json
	$(BIN)/warmstart fit --dataset ml-100k --min-rating 4 --output runs/ml100k-model
	$(BIN)/python benchmarks/bench_reads_during_writes.py --model runs/ml100k-model --output runs/reads-during-writes.json
	$(BIN)/python benchmarks/bench_propagation.py --model runs/ml100k-model --output runs/propagation.json

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
