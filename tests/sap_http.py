"""The SAP simulator served over real HTTP for a SAP customer sync, and what such a test reads back.

Tests whose run reads from another process (the extract process, partition workers) cannot share an
in-process transport: they point `SAP_BASE_URL` at a running server instead."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from sqlalchemy import func, select

from hub.core.db import get_engine
from hub.core.models import Customer, QuarantinedRecord
from hub.core.settings import reset_settings_cache
from hub.ledger.loading import read_cursor
from sandbox.core import running_server
from sandbox.sap import SapSandbox


@contextmanager
def served_sap(monkeypatch: pytest.MonkeyPatch, *, partners: int, seed: int, max_page_size: int) -> Iterator[SapSandbox]:
    """A `SapSandbox` on a real server, with the settings pointing at it for the block."""
    sandbox = SapSandbox(partners=partners, seed=seed, max_page_size=max_page_size)
    with running_server(sandbox) as base_url:
        monkeypatch.setenv("SAP_BASE_URL", base_url.rstrip("/") + "/sap/opu/odata/sap/API_BUSINESS_PARTNER/")
        reset_settings_cache()
        yield sandbox
    monkeypatch.undo()
    reset_settings_cache()


def run(**params: Any) -> dict[str, Any]:
    """The SAP customer sync flow, called as a schedule would call it."""
    from flows.sync_sap_customers import sync_sap_customers

    return sync_sap_customers(**params)


def table_counts() -> tuple[int, int]:
    """(customers loaded, records quarantined)."""
    with get_engine().connect() as conn:
        return (conn.execute(select(func.count()).select_from(Customer)).scalar_one(),
                conn.execute(select(func.count()).select_from(QuarantinedRecord)).scalar_one())


def cursor() -> dict[str, Any] | None:
    """The SAP customers' stored watermark."""
    with get_engine().connect() as conn:
        return read_cursor(conn, "sap", "customers")
