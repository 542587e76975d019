# edgeflow's front door. Every target prints what it did and where the results are.
PY       ?= python3
VENV     ?= .venv
BIN      := $(VENV)/bin
PYTHON   := $(BIN)/python
CONFIG   ?= configs/demo.yaml
CLUSTER  ?= local
RUN      ?=
DEMO_DIR ?= data/demo
PYTEST_ARGS ?=

.PHONY: help setup services demo demo-data test bench preflight submit monitor image image-check lint clean

help:
	@echo "make setup                 create $(VENV) and install edgeflow with all extras"
	@echo "sudo make services         install and start a single-node SLURM and Prometheus (for the tests)"
	@echo "make demo                  demo data, a short training job through the launcher, the monitor"
	@echo "make test                  run the test suite"
	@echo "make bench                 print the performance figures"
	@echo "make preflight CONFIG=...  check a config's data without training"
	@echo "make submit CONFIG=... CLUSTER=...   preflight, then queue the training job"
	@echo "make monitor RUN=...       export a run's progress to Prometheus"
	@echo "make image CLUSTER=...     build the Apptainer image for a cluster"

$(VENV)/.installed: pyproject.toml constraints.txt
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -c constraints.txt -e '.[train,jobs,monitor,dev]'
	touch $@
	@echo "installed edgeflow into $(VENV)"

setup: $(VENV)/.installed

services:
	bash scripts/services-up.sh

demo-data: setup
	$(PYTHON) -m edgeflow demo-data --out $(DEMO_DIR) --train 96 --val 16 --seed 0

demo: setup
	bash scripts/demo.sh

test: setup
	$(BIN)/pytest $(PYTEST_ARGS)

bench: setup
	$(PYTHON) -m bench

preflight: setup
	$(PYTHON) -m edgeflow preflight --config $(CONFIG)

submit: setup
	$(PYTHON) -m jobs submit --config $(CONFIG) --cluster $(CLUSTER)

monitor: setup
	@test -n "$(RUN)" || (echo "usage: make monitor RUN=outputs/<experiment>"; exit 2)
	$(PYTHON) -m monitor --run $(RUN) --http 127.0.0.1:9464

image:
	bash container/build.sh $(CLUSTER)

image-check:
	bash container/check.sh $(CLUSTER)

lint: setup
	$(BIN)/ruff check .

clean:
	rm -rf build .pytest_cache
