# investflow: `make up` runs the whole system locally, `make test` passes the tests.
SHELL := /bin/bash
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp

.PHONY: install up down test bench lint clean

# Re-install whenever pyproject.toml changes; the CPU torch pin comes from the `model` extra.
$(STAMP): pyproject.toml
	@test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[model,dev]'
	@touch $(STAMP)

install: $(STAMP)

up: install
	@bash deployments/local/up.sh

down:
	@bash deployments/local/down.sh

test: install
	$(VENV)/bin/pytest

bench: install
	@for b in bench/*.py; do echo "== $$b"; $(PY) $$b || exit 1; done

lint: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

clean: down
	rm -rf .prefect data/market.db
