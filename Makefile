# Two commands do everything on a fresh machine: `make demo` and `make test`.
# `make up` / `make down`: the whole stack in the background (Prefect server, worker, ingress, simulators).
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
export PREFECT_SERVER_ANALYTICS_ENABLED ?= false
export GX_ANALYTICS_ENABLED ?= false
# pytest-xdist workers for `make test` (each gets its own database: tests/conftest.py); 1 runs serially.
TEST_WORKERS ?= 2

.PHONY: install demo test lint typecheck bench clean chromium up down status smoke prefect-yaml

# The virtual environment, rebuilt when the dependencies or their pins change.
$(STAMP): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check --upgrade "pip>=24"
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -c constraints.txt -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

## The main job on the embedded default (SQLite under var/ plus the sandboxes).
demo: install
	$(BIN)/drymix demo

## Headless Chromium (Debian's package) renders /dashboard in the monitoring tests.
chromium:
	command -v chromium >/dev/null || (apt-get -o DPkg::Lock::Timeout=600 update && DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=600 install -y chromium)

## The whole test suite (SQLite by default; DATABASE_URL=postgresql+psycopg://... for PostgreSQL).
test: install chromium
	$(BIN)/ruff check .
	$(BIN)/mypy --explicit-package-bases hub connectors data_mappings expectations tasks flows sandbox bench
	$(BIN)/lint-imports
	$(BIN)/python -m pytest -q -p no:cacheprovider -n $(TEST_WORKERS) --dist loadfile

## The local production stack in the background: Prefect server (UI), process work pool + worker, webhook
## ingress, every simulator; deployments, Secret blocks and rate limits registered. UP_ARGS=--no-sandbox for real systems.
up: install
	$(BIN)/drymix stack up $(UP_ARGS)

## Stop everything `make up` started.
down: install
	$(BIN)/drymix stack down

status: install
	$(BIN)/drymix stack status

## Post-deployment verification against the running stack (or PREFECT_API_URL).
smoke: install
	$(BIN)/drymix smoke

## prefect.yaml rendered from the dataset registry (hub/datasets.py) and config/integrations.toml; commit the result.
prefect-yaml: install
	$(BIN)/drymix deploy render

## Style, and the walls between the packages (import-linter contracts in pyproject.toml, docs/architecture.md).
lint: install
	$(BIN)/ruff check .
	$(BIN)/lint-imports

typecheck: install
	$(BIN)/mypy --explicit-package-bases hub connectors data_mappings expectations tasks flows sandbox bench

## The plan's performance table against the simulators over real HTTP (and OPC UA), ~3 min, into the database named
## by DATABASE_URL (its SAP row is bench/sap_writeback.py). The engine benchmarks run on their own: bench/sap_sync.py
## (100,000 partners against a COPY floor), bench/metrics_overhead.py (docs/performance.md).
bench: install
	$(BIN)/python bench/performance_table.py

clean:
	rm -rf var/drymix.db* var/data_docs var/prefect var/stack logs
