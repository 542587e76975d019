# edgeflow's front door. Every target prints what it did and where the results are.
PY       ?= python3
VENV     ?= .venv
BIN      := $(VENV)/bin
PYTHON   := $(BIN)/python
CONFIG   ?= configs/demo.yaml
CLUSTER  ?= local
RUN      ?=
SET      ?=
STAGES   ?=
DEMO_DIR ?= data/demo
PYTEST_ARGS ?=
# pytest-xdist workers for `make test` (a file stays on one worker; SLURM tests share one).
TEST_WORKERS ?= 2

.PHONY: help setup services demo demo-data test bench probe preflight pack submit monitor report status image image-check lint clean export import-v1

help:
	@echo "make setup                 create $(VENV) and install edgeflow with all extras"
	@echo "sudo make services         install and start a single-node SLURM and Prometheus (for the tests)"
	@echo "make demo                  set up, demo data, a short training job through the launcher, the monitor, a report"
	@echo "make test                  set up, start the test services when root (else say what skips), run the tests"
	@echo "make demo-data             render the demo data set into $(DEMO_DIR) only"
	@echo "make bench                 print the performance figures"
	@echo "make probe                 SIGKILL a tiny run 20 times, resume it, compare bit for bit (KILLS=N);"
	@echo "                           then pack, rank, export, import-v1 4 times each, rerun, compare (COMMAND_KILLS=N)"
	@echo "make preflight CONFIG=...  check a config's data without training"
	@echo "make pack CONFIG=... [OUT=dir]  decode the config's data once into a pack (data.packed_dir)"
	@echo "make submit CONFIG=... CLUSTER=... [SET=\"k=v k2=v2\"]   preflight, then queue the training job"
	@echo "make submit STAGES=\"a.yaml b.yaml\" CLUSTER=... [SET=...]   a chain: each stage after the one before, from its best checkpoint"
	@echo "make monitor RUN=...       export a run's progress to Prometheus"
	@echo "make report RUN=... [OUT=f.png|f.html]   a picture of a run: loss, grad norm, LR, EPE, early stop"
	@echo "make status [RUN=...]      is a run alive? (without RUN: every run under outputs/)"
	@echo "make export RUN=... ARCH=... OUT=... [VELA=ethos-u55-128]   one arch as SavedModel/TFLite (+ NPU report)"
	@echo "make import-v1 CKPT=... OUT=... [CONFIG=...]   an original-trainer checkpoint as a run directory"
	@echo "make image CLUSTER=...     build the Apptainer image for a cluster (prints the plan first)"
	@echo "make image-check CLUSTER=...   on a GPU node: driver, TensorFlow's GPUs, one timed training step"
	@echo "make lint                  ruff and mypy over the code"
	@echo "make clean                 remove build files and test caches"
	@echo "make help                  this list"

# The build is warning-free (tests/test_packaging.py); setuptools' one "Editable installation." note, which
# warns of a folder in the working directory named like a package (here: the package's own source), is
# silenced.
$(VENV)/.installed: pyproject.toml constraints.txt
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	PYTHONWARNINGS="ignore:Editable installation" $(BIN)/pip install -q -c constraints.txt \
		-e '.[train,jobs,monitor,search,deploy,report,dev]'
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
	@bash scripts/test-services.sh
	$(BIN)/pytest -n $(TEST_WORKERS) --dist loadgroup --no-loadscope-reorder $(PYTEST_ARGS)

bench: setup
	$(PYTHON) -m bench

probe: setup
	$(PYTHON) -m bench.probe_kill_resume --kills $(or $(KILLS),20)
	$(PYTHON) -m bench.probe_kill_commands --kills $(or $(COMMAND_KILLS),4)

preflight: setup
	$(PYTHON) -m edgeflow preflight --config $(CONFIG)

pack: setup
	$(PYTHON) -m edgeflow pack --config $(CONFIG) $(if $(OUT),--out $(OUT))

# SET="k=v k2=v2": each word one --set (single-quoted for the shell, so lists and brackets pass as typed).
# STAGES="a.yaml b.yaml": a chain of stages instead of CONFIG (SET applies to every stage).
submit: setup
	$(PYTHON) -m jobs submit $(if $(strip $(STAGES)),--stages $(STAGES),--config $(CONFIG)) --cluster $(CLUSTER) $(foreach s,$(SET),--set '$(subst ','\'',$(s))')

monitor: setup
	@test -n "$(RUN)" || (echo "usage: make monitor RUN=outputs/<experiment>"; exit 2)
	$(PYTHON) -m monitor --run $(RUN) --http 127.0.0.1:9464

report: setup
	@test -n "$(RUN)" || (echo "usage: make report RUN=outputs/<experiment> [OUT=report.png|report.html]"; exit 2)
	$(PYTHON) -m edgeflow report $(RUN) $(if $(OUT),--out $(OUT))

status: setup
	$(if $(RUN),$(PYTHON) -m jobs status $(RUN),$(PYTHON) -m jobs list --root outputs)

export: setup
	@test -n "$(RUN)" -a -n "$(ARCH)" -a -n "$(OUT)" || \
		(echo "usage: make export RUN=outputs/<experiment> ARCH=000021222 OUT=exports/<name> [VELA=ethos-u55-128]"; exit 2)
	$(PYTHON) -m edgeflow export --run $(RUN) --arch $(ARCH) --out $(OUT) $(if $(VELA),--vela --vela-config $(VELA))

# CONFIG given on the command line wins; otherwise the production config (not the demo default above).
import-v1: setup
	@test -n "$(CKPT)" -a -n "$(OUT)" || \
		(echo "usage: make import-v1 CKPT=OLD_RUN/checkpoints/supernet_best.ckpt OUT=outputs/<name> [CONFIG=...]"; exit 2)
	$(PYTHON) -m edgeflow import-v1 --checkpoint $(CKPT) --out $(OUT) \
		--config $(if $(filter command line environment,$(origin CONFIG)),$(CONFIG),configs/supernet_fc2_180x240.yaml)

image:
	$(PYTHON) -m jobs.image build --cluster $(CLUSTER)

image-check:
	$(PYTHON) -m jobs.image check --cluster $(CLUSTER)

lint: setup
	$(BIN)/ruff check .
	$(BIN)/mypy

clean:
	rm -rf build .pytest_cache
