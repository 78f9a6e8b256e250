"""Shared set-up for the Google Workspace tests: a sandbox, its key file where the settings expect it, a connector."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from connectors.core.config import RetryPolicy
from connectors.google_workspace.connector import GoogleCalendarConnector
from hub.core.settings import integration_config, reset_settings_cache
from hub.runtime.connections import build_google_workspace_connector
from sandbox.core import as_transport, running_server
from sandbox.google_calendar import GoogleCalendarSandbox

CALENDAR = "depot.ops@drymix.in"
FAST_RETRY = RetryPolicy(max_retries=6, base_delay_ms=1, max_delay_ms=20, jitter_ratio=0.5)


def write_key_file(sandbox: GoogleCalendarSandbox) -> Path:
    path = Path(os.environ["GOOGLE_SERVICE_ACCOUNT_FILE"])
    path.write_text(sandbox.service_account.key_file_json(), encoding="utf-8")
    return path


def in_process_connector(
    sandbox: GoogleCalendarSandbox, *, sleeps: list[float] | None = None, retry: RetryPolicy = FAST_RETRY
) -> GoogleCalendarConnector:
    """The connector talking to the sandbox through an in-process transport (Google's real URLs)."""
    write_key_file(sandbox)
    reset_settings_cache()
    config = integration_config("google_workspace").model_copy(update={"retry": retry, "rate_budget_per_s": 10_000})
    sleep: Callable[[float], None] = (lambda s: sleeps.append(s)) if sleeps is not None else (lambda s: None)
    return build_google_workspace_connector(transport=as_transport(sandbox), config=config, sleep=sleep)


@contextmanager
def served(sandbox: GoogleCalendarSandbox, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """The sandbox on a real socket, with GOOGLE_BASE_URL / GOOGLE_TOKEN_URL pointing at it."""
    write_key_file(sandbox)
    with running_server(sandbox) as url:
        monkeypatch.setenv("GOOGLE_BASE_URL", f"{url}/calendar/v3/")
        monkeypatch.setenv("GOOGLE_TOKEN_URL", f"{url}/token")
        reset_settings_cache()
        try:
            yield url
        finally:
            monkeypatch.delenv("GOOGLE_BASE_URL", raising=False)
            monkeypatch.delenv("GOOGLE_TOKEN_URL", raising=False)
            reset_settings_cache()


def event_body(event_id: str, *, hour: int = 9, summary: str = "Delivery", **extra: Any) -> dict[str, Any]:
    return {
        "id": event_id,
        "summary": summary,
        "start": {"dateTime": f"2026-12-01T{hour:02d}:00:00+05:30", "timeZone": "Asia/Kolkata"},
        "end": {"dateTime": f"2026-12-01T{hour + 1:02d}:00:00+05:30", "timeZone": "Asia/Kolkata"},
        **extra,
    }
