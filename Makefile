# investflow: `make up` runs the whole system locally, `make test` passes the tests.
SHELL := /bin/bash
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp
# Every route's dependencies with the test tools: what `make install` (and so the tests) runs on.
LOCK := requirements/dev.txt
# One lock per route, as lock:extras (see README.md, "Dependencies and images"). core: no
# extra (the health page's node); deploy: the AWS node, whose `prefect deploy --all` imports
# the flows of every route but the model's to read their parameters.
ROUTES := core: ingestion:ingestion backups:backups oci:oci model:model workers:workers \
	deploy:workers,ingestion,backups,oci
# Extra pip-compile options for dev.txt, e.g. `make lock LOCK_ARGS=--upgrade` or
# `make lock LOCK_ARGS="--upgrade-package yfinance"`.
LOCK_ARGS ?=

.PHONY: install lock up down status test bench images lint clean

# Re-install whenever the lock or pyproject.toml changes. The lock pins every package (pip and
# this machine's CPU torch 2.13.0+cpu included), so nothing outside it is installed; then the
# project itself, editable, and pip's check that the lock is complete.
$(STAMP): pyproject.toml $(LOCK)
	@mkdir -p .prefect/logs
	@echo "Installing $(VENV) (the first time takes a few minutes; log: .prefect/logs/install.log)"
	@test -x $(PY) || python3 -m venv $(VENV)
	@{ $(PY) -m pip install --no-deps -r $(LOCK) && $(PY) -m pip install --no-deps -e . \
		&& $(PY) -m pip check; } >>.prefect/logs/install.log 2>&1 \
		|| { tail -20 .prefect/logs/install.log; echo "install failed: see .prefect/logs/install.log"; exit 1; }
	@touch $(STAMP)
	@echo "Installed."

install: $(STAMP)

# Re-resolve the locks from pyproject.toml (options in its [tool.pip-tools]): dev.txt first,
# keeping its pins unless LOCK_ARGS says otherwise, then each route's from scratch under
# dev.txt's pins, so a route never gets a version the tests did not run. Each lock's header
# names its extras.
lock: install
	@CUSTOM_COMPILE_COMMAND="make lock (extras: all)" $(VENV)/bin/pip-compile --quiet \
		--all-extras $(LOCK_ARGS) -o $(LOCK) pyproject.toml
	@for route in $(ROUTES); do \
		name=$${route%%:*}; extras=$${route#*:}; \
		CUSTOM_COMPILE_COMMAND="make lock (extras: $${extras:-none})" $(VENV)/bin/pip-compile \
			--quiet --upgrade $$(for e in $${extras//,/ }; do echo --extra $$e; done) \
			-c $(LOCK) -o requirements/$$name.txt pyproject.toml || exit 1; \
	done
	@echo "Locked: $(LOCK) and one lock per route in requirements/"

up: install
	@$(PY) -m deployments.local_stack up

down:
	@if [ -x $(PY) ]; then $(PY) -m deployments.local_stack down; else echo "nothing to stop"; fi

# The server, each pool's workers, the last run of each deployment, data freshness per market:
# of the local stack, or of the server PREFECT_API_URL names.
status: install
	@$(PY) -m deployments.status

test: install
	$(VENV)/bin/pytest

# Every image from its route's lock, for this machine's platform (a docker engine needed);
# REGISTRY=ghcr.io/you pushes multi-platform builds instead. See deployments/docker/build.sh.
images:
	@deployments/docker/build.sh

bench: install
	@for b in bench/*.py; do echo "== $$b"; $(PY) $$b || exit 1; done

lint: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

clean: down
	rm -rf .prefect data/market.db
