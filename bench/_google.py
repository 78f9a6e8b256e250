"""Benchmark helper: Google Calendar events inserted per second through the connector, over real HTTP.

`google_events_per_s()` is used by bench/m365_google.py. The sandbox runs in its own process (as Google would),
the connector signs its JWT, gets a token once, and inserts events with our deterministic ids one by one.
Run alone: `.venv/bin/python bench/_google.py` prints the figure and a plain-httpx baseline as one JSON line.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _start_sandbox(key_file: Path) -> tuple[subprocess.Popen[bytes], str]:
    port = _free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "sandbox", "google", "--port", str(port), "--key-file", str(key_file), "--log-level", "warning"],
        cwd=ROOT,
    )
    url = f"http://127.0.0.1:{port}"
    import httpx

    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{url}/_sandbox/health", timeout=1).status_code == 200 and key_file.exists():
                return proc, url
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    proc.kill()
    raise RuntimeError("the Google sandbox did not start")


def _bodies(prefix: str, n: int) -> list[dict[str, Any]]:
    from data_mappings.google_events import to_google_event
    from data_mappings.schedules import ScheduleSnapshot

    start = datetime.now(UTC).replace(microsecond=0) + timedelta(days=1)
    return [
        to_google_event(
            ScheduleSnapshot(
                schedule_ref=f"{prefix}-{i:06d}", kind="delivery", title=f"Delivery {i}", location="Site",
                starts_at=start + timedelta(minutes=i), ends_at=start + timedelta(minutes=i + 60), updated_at=start,
            )
        )
        for i in range(n)
    ]


CALENDAR = "depot.ops@drymix.in"


def build_connector(url: str, key_file: Path, *, rate_budget_per_s: float | None = None) -> Any:
    """The Calendar connector against the sandbox at `url`, signing with its service-account key file.

    `rate_budget_per_s=None` keeps the configured budget (config/integrations.toml), as production runs."""
    from pydantic import SecretStr

    from connectors.core.client import IntegrationClient
    from connectors.core.jwt_bearer import JWTBearerGrant, load_service_account_info
    from connectors.google_workspace.connector import GoogleCalendarConnector
    from hub.core.settings import integration_config

    info = load_service_account_info(SecretStr(key_file.read_text()), None)
    update: dict[str, Any] = {"base_url": f"{url}/calendar/v3/", "token_url": f"{url}/token"}
    if rate_budget_per_s is not None:
        update["rate_budget_per_s"] = rate_budget_per_s
    config = integration_config("google_workspace").model_copy(update=update)
    auth = JWTBearerGrant(
        info, scopes=["https://www.googleapis.com/auth/calendar.events"], token_url=f"{url}/token", subject=CALENDAR,
    )
    return GoogleCalendarConnector(IntegrationClient(config, auth=auth), calendar_id=CALENDAR)


def measure(events: int = 300) -> dict[str, Any]:
    """Connector inserts per second and a plain httpx POST baseline of the same bodies, same sandbox."""
    import httpx

    with tempfile.TemporaryDirectory() as tmp:
        key_file = Path(tmp) / "key.json"
        proc, url = _start_sandbox(key_file)
        try:
            connector = build_connector(url, key_file, rate_budget_per_s=100_000)
            auth = connector.client.http.auth
            calendar = CALENDAR
            try:
                connector.connect()  # token fetched outside the timing, as in a long-running sync
                bodies = _bodies("BENCH", events)
                started = time.perf_counter()
                for body in bodies:
                    connector.insert_event(body)
                connector_s = time.perf_counter() - started
                token = auth.cache.get("token")
            finally:
                connector.close()
            plain = _bodies("PLAIN", events)
            events_url = f"{url}/calendar/v3/calendars/{calendar.replace('@', '%40')}/events?sendUpdates=none"
            with httpx.Client(headers={"Authorization": f"Bearer {token}"}) as client:
                started = time.perf_counter()
                for body in plain:
                    client.post(events_url, json=body).raise_for_status()
                plain_s = time.perf_counter() - started
        finally:
            proc.terminate()
            proc.wait(timeout=10)
    return {
        "calendar_events_per_s": round(events / connector_s, 1),
        "plain_httpx_events_per_s": round(events / plain_s, 1),
        "calendar_overhead_ratio": round(connector_s / plain_s, 2),
        "events": events,
    }


def google_events_per_s(events: int = 300) -> float:
    """Events inserted per second through the connector against the sandbox over real HTTP."""
    return float(measure(events)["calendar_events_per_s"])


if __name__ == "__main__":
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    print(json.dumps(measure()))
