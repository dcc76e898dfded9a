# Two commands on a fresh machine:  `make demo`  and  `make test`.
# TORCH picks the PyTorch build; for a CUDA build, e.g.
#   make demo TORCH="torch==2.13.0" TORCH_INDEX="--index-url https://download.pytorch.org/whl/cu128"
PYTHON ?= python3
VENV ?= .venv
TORCH ?= torch==2.13.0
TORCH_INDEX ?=
BIN := $(VENV)/bin
STAMP := $(VENV)/.molgen-installed

.PHONY: demo test test-slow install lint bench clean

install: $(STAMP)

$(STAMP): pyproject.toml Makefile
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q "$(TORCH)" $(TORCH_INDEX)
	$(BIN)/python -m pip install -q -e ".[dev]"
	# MOSES data ships inside the molsets wheel; its code does not import on a modern stack,
	# so its own (old, pinned) dependencies are never installed.
	$(BIN)/python -m pip install -q --no-deps molsets==0.3.1
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/molgen demo --out results/demo

test: $(STAMP)
	$(BIN)/python -m pytest -q tests

# everything, the slow checks too (MOSES sanity evaluations, the notebooks): about 15 more minutes
test-slow: $(STAMP)
	$(BIN)/python -m pytest -q tests -m "slow or not slow"

lint: $(STAMP)
	$(BIN)/ruff check molgen tests scripts

bench: $(STAMP)
	$(BIN)/python scripts/bench_metrics.py

clean:
	rm -rf $(VENV) results .pytest_cache
