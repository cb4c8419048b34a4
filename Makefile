# One entry point: `make run` (install + the default pipeline) and `make test` (install + the tests).
# Idempotent: the install step re-runs only when pyproject.toml changes.
PYTHON ?= python3.11
VENV   ?= .venv
EXTRAS ?= cpu,test
BIN    := $(VENV)/bin
comma  := ,
STAMP  := $(VENV)/.installed-$(shell cat pyproject.toml 2>/dev/null | sha1sum | cut -c1-12)-$(subst $(comma),_,$(EXTRAS))
export PATH := $(abspath $(VENV))/bin:$(PATH)
export DVC_NO_ANALYTICS ?= 1
export HF_HUB_OFFLINE ?= 1
export TRANSFORMERS_OFFLINE ?= 1
export TOKENIZERS_PARALLELISM ?= false

.PHONY: install run test test-all bench bench-pipeline gpu-check clean-outputs

install: $(STAMP)

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e ".[$(EXTRAS)]"
	@rm -f $(VENV)/.installed-*
	@touch $@

run: install
	$(BIN)/python -m modalrec.timings $(BIN)/dvc repro

test: install
	$(BIN)/python -m pytest -q

test-all: install
	$(BIN)/python -m pytest -q -m ""

bench: install
	$(BIN)/python benchmarks/run_all.py

gpu-check: install
	$(BIN)/python benchmarks/gpu_check.py

bench-pipeline: install
	$(BIN)/python benchmarks/pipeline.py --rev HEAD
