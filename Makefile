# spikeforge — `make help` lists the targets.
SHELL := /bin/bash
VENV ?= .venv
PYTHON ?= python3
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
ARGS ?=
# Test runner options (e.g. make test PYTEST_ARGS="-k sltt -x")
PYTEST_ARGS ?=
# pytest-xdist workers, each test file on one worker with one torch thread (tests/conftest.py); 0 runs
# the suite in one process
TEST_WORKERS ?= 2
XDIST := -n $(TEST_WORKERS) --dist loadfile

.DEFAULT_GOAL := help
.PHONY: help install train eval test test-slow test-all lint format clean-outputs prepare-dvs bench-data repro-list compare

help:  ## list the targets
	@grep -hE '^[a-zA-Z0-9_.%-]+:.*?## ' $(MAKEFILE_LIST) | \
	  awk 'BEGIN {FS = ":.*?## "}; {printf "  \033[36m%-24s\033[0m %s\n", $$1, $$2}'

$(STAMP): pyproject.toml setup.py requirements.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -r requirements.txt
	$(PY) -m pip install -q --no-deps -e .
	touch $(STAMP)

install: $(STAMP)  ## create .venv and install the pinned dependencies (idempotent)

train: install  ## train the default (BPTT, convnet, embedded digits); extra overrides via ARGS="..."
	$(PY) src/train.py $(ARGS)

eval: install  ## evaluate a checkpoint: make eval ARGS="ckpt_path=outputs/.../last.ckpt"
	$(PY) src/eval.py $(ARGS)

test: install  ## fast test suite (no GPU, no datasets)
	$(PY) -m pytest -m "not slow" -q $(XDIST) $(PYTEST_ARGS)

test-slow: install  ## long checks: accuracy targets, kill-and-resume, sweeps
	$(PY) -m pytest -m slow -q $(XDIST) $(PYTEST_ARGS)

test-all: install  ## fast and slow tests
	$(PY) -m pytest -q $(XDIST) $(PYTEST_ARGS)

lint: install  ## ruff, and the one-way import layers of src/ (docs/architecture.md)
	$(VENV)/bin/ruff check src tests scripts
	$(PY) scripts/check_layers.py

format: install  ## ruff format + autofix
	$(VENV)/bin/ruff check --fix src tests scripts
	$(VENV)/bin/ruff format src tests scripts

clean-outputs:  ## delete outputs/ run directories
	rm -rf outputs/* && touch outputs/.gitkeep

prepare-dvs: install  ## integrate DVS events into cached frames: make prepare-dvs ARGS="--dataset all --frames 10 20"
	$(PY) scripts/prepare_dvs.py $(ARGS)

bench-data: install  ## data-loading throughput (samples/s) per dataset → outputs/bench_data/
	$(PY) scripts/bench_data.py $(ARGS)

repro-list:  ## paper recipes: make target, paper top-1, protocol (paper = test-set selection), estimated GPU budget
	@$(PY) scripts/repro.py list

repro-%: install  ## run a paper recipe (protocol=paper by default), e.g. make repro-sltt-cifar10 ARGS="trainer=gpu"
	$(PY) scripts/repro.py run $* $(ARGS)

compare: install  ## every method on digits with the same model, 3 seeds each → docs/compare/ (table + plots)
	$(PY) scripts/compare.py $(ARGS)

.PHONY: bench
bench: install  ## training-step time/memory per method x model x T vs ANN and plain loop → outputs/bench/<date>/ (ARGS="--preset all --out docs/benchmarks")
	$(PY) scripts/bench.py $(ARGS)

.PHONY: gpu-check
gpu-check: install  ## on a CUDA machine: AMP steps of every method, host syncs, fused neurons, bench → docs/benchmarks/gpu-<date>/ (docs/performance.md "GPU")
	scripts/gpu_check.sh $(ARGS)
