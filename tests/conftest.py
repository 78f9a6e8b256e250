"""Shared fixtures: an isolated hub environment, a real migrated database, a Prefect test harness.

The suite runs on SQLite by default and on PostgreSQL when DATABASE_URL says so (CI does).
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

_TMP = Path(tempfile.mkdtemp(prefix="drymix-tests-"))


def _database_of_this_worker(url: str) -> str:
    """Under pytest-xdist (`make test` runs two workers) each worker gets its own PostgreSQL database.

    The tests empty tables, drop the schema and count rows: two workers on one database would see each
    other's rows. `test` becomes `test_gw0`, `test_gw1`, created on first use on the same server.
    SQLite needs nothing: every worker has its own temporary directory.
    """
    worker = os.environ.get("PYTEST_XDIST_WORKER")
    if not worker or not url.startswith("postgresql"):
        return url
    import psycopg
    from psycopg import sql
    from sqlalchemy.engine import make_url

    parsed = make_url(url)
    name = f"{parsed.database}_{worker}"
    dsn = parsed.set(drivername="postgresql").render_as_string(hide_password=False)
    with psycopg.connect(dsn, autocommit=True) as conn:
        if conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone() is None:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    return parsed.set(database=name).render_as_string(hide_password=False)


# The URL the suite was given (empty: SQLite), kept apart from the one this process uses: pytest-xdist's workers
# inherit the controller's environment, and taking its DATABASE_URL (its own temporary SQLite file) would put
# both workers on one file (migrations racing, "database is locked", each other's rows).
_GIVEN_URL = os.environ.setdefault("DRYMIX_TESTS_GIVEN_DATABASE_URL", os.environ.get("DATABASE_URL", ""))
os.environ["DATABASE_URL"] = _database_of_this_worker(_GIVEN_URL or f"sqlite:///{_TMP / 'hub.db'}")
os.environ["PREFECT_HOME"] = str(_TMP / "prefect")
os.environ["PREFECT_SERVER_ANALYTICS_ENABLED"] = "false"
os.environ["GX_ANALYTICS_ENABLED"] = "false"
os.environ["DATA_DOCS_DIR"] = str(_TMP / "data_docs")
os.environ["LOG_DIR"] = str(_TMP / "logs")
os.environ["ERROR_SPOOL_DIR"] = str(_TMP / "error_spool")
# Load retries ride out a database outage for a minute in production; two seconds keep failing tests quick.
os.environ["DATABASE_RETRY_WINDOW_S"] = "2"
os.environ["SAP_USERNAME"] = "DRYMIX_INT"
os.environ["SAP_PASSWORD"] = "sandbox-secret"
os.environ["SAP_CLIENT_ID"] = "drymix-hub"
os.environ["SAP_CLIENT_SECRET"] = "sandbox-client-secret"
os.environ["RAZORPAY_KEY_ID"] = "rzp_test_drymix"
os.environ["RAZORPAY_KEY_SECRET"] = "sandbox-key-secret"
os.environ["WHATSAPP_ACCESS_TOKEN"] = "sandbox-whatsapp-token"
os.environ["WHATSAPP_PHONE_NUMBER_ID"] = "100000000000001"
os.environ["MICROSOFT365_TENANT_ID"] = "8f5e2c1a-6b3d-4e7f-9a10-3c2d1e0f4a5b"
os.environ["MICROSOFT365_CLIENT_ID"] = "5b1f8c2e-3d4a-4b6c-8e9f-0a1b2c3d4e5f"
os.environ["MICROSOFT365_CLIENT_SECRET"] = "sandbox-graph-secret"
os.environ["MICROSOFT365_DRIVE_ID"] = "b!DrYmIx-ErPdOcS-LiBrArY0000000000000000000000000000000000000"
os.environ["MICROSOFT365_CALENDAR_USER"] = "planning@drymix.example"
# Google sandbox: the key file is written by the google_sandbox fixtures (the sandbox generates the key pair).
os.environ["GOOGLE_SERVICE_ACCOUNT_FILE"] = str(_TMP / "google-service-account.json")
os.environ["GOOGLE_DELEGATED_SUBJECT"] = "depot.ops@drymix.in"
os.environ["GOOGLE_CALENDAR_ID"] = "depot.ops@drymix.in"

# The shipped configuration with retry delays short enough for tests (the policy shape is unchanged).
_FAST_CONFIG = _TMP / "integrations.toml"
_shipped = (Path(__file__).resolve().parent.parent / "config" / "integrations.toml").read_text()
_FAST_CONFIG.write_text(
    _shipped.replace("base_delay_ms = 5000", "base_delay_ms = 10")
    .replace("base_delay_ms = 2000", "base_delay_ms = 10")
    .replace("base_delay_ms = 1000", "base_delay_ms = 10")
    .replace('base_url = "http://127.0.0.1:8401/sap/opu/odata/sap/API_BUSINESS_PARTNER/"', 'base_url = "http://sap.sandbox/sap/opu/odata/sap/API_BUSINESS_PARTNER/"')
    .replace("timeout_s = 30.0", "timeout_s = 5.0")
)
os.environ["INTEGRATIONS_FILE"] = str(_FAST_CONFIG)


@pytest.fixture(scope="session")
def tmp_root() -> Path:
    return _TMP


@pytest.fixture(scope="session")
def migrated_db() -> str:
    from hub.core.db import upgrade
    from hub.core.settings import get_settings, reset_settings_cache

    reset_settings_cache()
    url = get_settings().database_url
    if url.startswith("postgresql"):
        from alembic import command

        from hub.core.db import alembic_config, engine_for

        with engine_for(url).begin() as conn:
            # A clean schema whatever earlier runs or branches left behind.
            conn.exec_driver_sql("DROP SCHEMA public CASCADE")
            conn.exec_driver_sql("CREATE SCHEMA public")
        command.upgrade(alembic_config(url), "heads")
    else:
        upgrade()
    return url


@pytest.fixture
def db(migrated_db: str) -> Iterator[str]:
    """A migrated database emptied before each test."""
    from hub.core.db import get_engine
    from hub.core.models import Base

    engine = get_engine()
    with engine.begin() as conn:
        for table in reversed(Base.metadata.sorted_tables):
            conn.execute(table.delete())
    yield migrated_db


@pytest.fixture(scope="session")
def prefect_harness() -> Iterator[None]:
    from prefect.testing.utilities import prefect_test_harness

    import hub.runtime.prefect_runtime  # noqa: F401 - Prefect environment defaults

    with prefect_test_harness(server_startup_timeout=120):
        yield
