# Set-up and common tasks. `make install` creates .venv and installs torch FIRST at a pinned
# version, then the suite with that pin kept as a constraint (so no multi-GB CUDA torch is pulled).
PYTHON ?= python3
VENV   ?= .venv
TORCH  ?= 2.13.0
BIN    := $(VENV)/bin
PIP    := $(BIN)/python -m pip
STAMP  := $(VENV)/.installed-$(TORCH)

.PHONY: install test test-fast run evaluate lint clean gpu-check

install: $(STAMP)

$(STAMP): pyproject.toml Makefile
	$(PYTHON) -m venv $(VENV)
	$(PIP) install --upgrade pip
	$(PIP) install "torch==$(TORCH)"
	echo "torch==$(TORCH)" > $(VENV)/constraints.txt
	$(PIP) install -c $(VENV)/constraints.txt -e ".[dev]"
	touch $@

# The main job: train CAR + tiny EDSR at x4 on the embedded sample set (CPU, a few minutes),
# test it and print the results table. ARGS adds Hydra overrides, e.g. ARGS="model=taid scale=2".
run: install
	$(BIN)/python -m taid_car.run $(ARGS)

# Bicubic & Bicubic on the real benchmark sets (DATA=folder holding Set5/ and Set14/).
DATA ?= ../shared/data
evaluate: install
	$(BIN)/python -m taid_car.evaluate data=benchmark data_root=$(DATA) 'scales=[2,4]' $(ARGS)

test: install
	$(BIN)/python -m pytest $(ARGS)

# Everything but the tests marked slow (each >= 3 s: subprocess runs, kernel compiles): about a minute.
test-fast: install
	$(BIN)/python -m pytest -m "not slow" $(ARGS)

lint: install
	$(BIN)/ruff check src tests experiments

# On a CUDA machine (< 5 min): compiled Triton tests, resampler timing/bandwidth/memory vs the goals,
# a 200-step paper-width training smoke run; writes experiments/gpu_check/<device>.json and .md.
# ARGS adds options, e.g. ARGS="--skip-train" or ARGS="--device cpu --quick" (no GPU).
gpu-check: install
	$(BIN)/python experiments/gpu_check/gpu_check.py $(ARGS)

clean:
	rm -rf $(VENV) outputs multirun .pytest_cache
