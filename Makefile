# Two commands set everything up on a fresh machine:
#   make demo   synthetic data -> inspect -> train -> evaluate -> predict -> export
#   make test   the pytest suite (CI: .ci/run)
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-$(shell cksum setup.cfg pyproject.toml | cksum | cut -d' ' -f1)
DEMO_DATA := data/synthetic
DEMO_RUN := runs/demo
export TF_CPP_MIN_LOG_LEVEL ?= 2
# pytest processes of make test (pytest-xdist); JOBS=1 runs the suite in this process
JOBS ?= 2
XDIST = $(if $(filter 1,$(JOBS)),,-n $(JOBS) --dist loadgroup)

.PHONY: demo test test-slow test-all install clean-demo

install: $(STAMP)

$(STAMP): setup.cfg pyproject.toml
	@test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[dev]'
	@rm -f $(VENV)/.installed-*
	@touch $@

$(DEMO_DATA)/instances_train.json: | $(STAMP)
	$(BIN)/keras-solo make-synthetic --out $(DEMO_DATA) --images 400 --size 256x128 --seed 0

$(DEMO_RUN)/DONE: training/demo.yaml | $(STAMP) $(DEMO_DATA)/instances_train.json
	$(BIN)/keras-solo train --config training/demo.yaml --out $(DEMO_RUN) --overwrite

demo: $(STAMP) $(DEMO_DATA)/instances_train.json
	$(BIN)/keras-solo inspect-data $(DEMO_DATA)/instances_train.json --out runs/demo_inspect
	$(MAKE) --no-print-directory $(DEMO_RUN)/DONE
	$(BIN)/keras-solo evaluate --model $(DEMO_RUN)/best.keras --data $(DEMO_DATA)/instances_val.json --out $(DEMO_RUN)/eval --overwrite
	$(BIN)/keras-solo predict --model $(DEMO_RUN)/best.keras --source $(DEMO_DATA)/val --out $(DEMO_RUN)/predict --limit 8 --overwrite
	@echo "demo done: see $(DEMO_RUN)/ (loss_curve.png, eval/metrics.json, predict/*.jpg)"

test: $(STAMP)
	$(BIN)/python -m pytest -q --durations=15 $(XDIST)

# the slow tests in one process: the multi-worker and interrupt cases start processes of their own
test-slow: $(STAMP)
	$(BIN)/python -m pytest -q -m slow

test-all: test test-slow

clean-demo:
	rm -rf $(DEMO_RUN) $(DEMO_DATA)
