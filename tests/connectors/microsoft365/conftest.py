"""A Microsoft 365 sandbox in-process and a connector wired to it (sleeps recorded, not slept)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from connectors.microsoft365 import Microsoft365Connector
from connectors.microsoft365.connector import _TOKEN_CACHES
from hub.core.settings import reset_settings_cache
from hub.runtime.connections import build_microsoft365_connector
from sandbox.core import as_transport
from sandbox.microsoft365 import Microsoft365Sandbox


@pytest.fixture
def graph() -> Microsoft365Sandbox:
    return Microsoft365Sandbox(seed=11)


@pytest.fixture
def sleeps() -> list[float]:
    return []


@pytest.fixture
def connector(graph: Microsoft365Sandbox, sleeps: list[float]) -> Iterator[Microsoft365Connector]:
    reset_settings_cache()
    _TOKEN_CACHES.clear()  # each test starts without a cached token
    conn = build_microsoft365_connector(transport=as_transport(graph), sleep=sleeps.append)
    try:
        yield conn
    finally:
        conn.close()
        _TOKEN_CACHES.clear()
