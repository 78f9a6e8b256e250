# Two commands do everything on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
export PREFECT_SERVER_ANALYTICS_ENABLED ?= false
export GX_ANALYTICS_ENABLED ?= false

.PHONY: install demo test lint typecheck bench clean chromium

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
	command -v chromium >/dev/null || (apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y chromium)

## The whole test suite (SQLite by default; DATABASE_URL=postgresql+psycopg://... for PostgreSQL).
test: install chromium
	$(BIN)/ruff check .
	$(BIN)/python -m pytest -q -p no:cacheprovider

lint: install
	$(BIN)/ruff check .

typecheck: install
	$(BIN)/mypy hub connectors data_mappings expectations tasks flows sandbox

## 100,000 partners over real HTTP into the PostgreSQL named by DATABASE_URL, against a COPY floor.
bench: install
	$(BIN)/python bench/sap_sync.py
	$(BIN)/python bench/metrics_overhead.py

clean:
	rm -rf var/drymix.db* var/data_docs var/prefect logs
