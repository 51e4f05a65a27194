# investflow: `make up` runs the whole system locally, `make test` passes the tests.
SHELL := /bin/bash
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp

.PHONY: install up down status test bench lint clean

# Re-install whenever pyproject.toml changes; the CPU torch pin comes from the `model` extra.
$(STAMP): pyproject.toml
	@mkdir -p .prefect/logs
	@echo "Installing $(VENV) (the first time takes a few minutes; log: .prefect/logs/install.log)"
	@test -x $(PY) || python3 -m venv $(VENV)
	@{ $(PY) -m pip install --upgrade pip && $(PY) -m pip install -e '.[model,dev]'; } \
		>>.prefect/logs/install.log 2>&1 \
		|| { tail -20 .prefect/logs/install.log; echo "install failed: see .prefect/logs/install.log"; exit 1; }
	@touch $(STAMP)
	@echo "Installed."

install: $(STAMP)

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

bench: install
	@for b in bench/*.py; do echo "== $$b"; $(PY) $$b || exit 1; done

lint: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

clean: down
	rm -rf .prefect data/market.db
