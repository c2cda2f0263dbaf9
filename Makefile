# CellSeg Serve — `make run` and `make test` set up everything they need from nothing.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip
# torch first, as a pair that works on the build machines (CPU there, CUDA on GPU hosts)
TORCH_PIN ?= torch==2.14.1 torchvision==0.29.1
STAMP := $(VENV)/.installed

.PHONY: install run demo test test-quick lint profile bench train train-data gpu-wheels gpu-check clean

$(STAMP): pyproject.toml client/pyproject.toml Makefile
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install -q $(TORCH_PIN)
	$(PIP) install -q -e ./client -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

run: install
	$(PY) -m scripts.run_local

demo: install
	$(PY) -m ml_service.tools.demo $(ARGS)

test: install
	$(PY) -m pytest $(PYTEST_ARGS)

# everything not marked slow or gpu, in a few minutes
test-quick: install
	$(PY) -m pytest -m "not slow and not gpu" $(PYTEST_ARGS)

lint: install
	$(VENV)/bin/ruff check . && $(VENV)/bin/mypy imageheader models ml_service contracts backend workers loadtest client/cellseg_client scripts && $(VENV)/bin/lint-imports

profile: install
	$(PY) -m ml_service.tools.profile $(ARGS)

bench: install
	$(PY) -m ml_service.tools.bench $(ARGS)

# the demo weights, from synthetic images (docs/benchmarks.md records the arguments used)
train: install
	for m in hrnet cbam_resunet unet; do $(PY) -m ml_service.train --model $$m $(ARGS) || exit 1; done

# your own annotated images: make train-data DATA=folder MODEL=unet [ARGS="--epochs 40"]
train-data: install
	@test -n "$(DATA)" || { echo "usage: make train-data DATA=folder MODEL=hrnet|cbam_resunet|unet"; exit 2; }
	$(PY) -m ml_service.train --data "$(DATA)" --model $(or $(MODEL),unet) $(ARGS)

# wheels a bare GPU host (Python 3.12, torch, timm, CUDA) lacks for scripts/gpu_check
gpu-wheels:
	scripts/gpu_wheels

gpu-check:
	scripts/gpu_check

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache *.egg-info
