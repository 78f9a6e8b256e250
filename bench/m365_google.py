"""Microsoft 365 and Google Workspace benchmark: document uploads and calendar event creation over real HTTP.

Run: `.venv/bin/python bench/m365_google.py`. The Graph sandbox runs in its own process
(`python -m sandbox microsoft365`, as Graph would be elsewhere); the connector talks to it over loopback.

- upload_s_per_mb: a 20 MB file (generated on disk) through the connector's upload session (10 x 320 KiB
  fragments read from disk one at a time, each PUT to the pre-authenticated URL), median of 5, in s/MB.
  Plan target: < 2 s/MB.
- upload_overhead_ratio: that time / the same bytes uploaded by plain httpx in the same run (the same
  session protocol, the same fragments, already in memory, no retry, metrics or progress bookkeeping):
  what the connector adds on top of the wire protocol (medians of 5 alternating rounds).
- small_uploads_per_s: 50 KB documents by simple upload (one PUT each, through the connector's rate
  budget of microsoft365.rate_budget_per_s). Plan: 10/s.
- calendar_events_per_s: events created per second. Microsoft: 200 events through `$batch` (20 per round
  trip, each with its transactionId). Google (bench/_google.py, when present): inserts with our event ids,
  one request each (Calendar has no batch in the connector). The figure reported is the SLOWER of the two
  providers, since a schedule burst must reach both calendars; both are printed separately too.
  Plan: 50/s.

Last line: one JSON object with upload_s_per_mb, upload_overhead_ratio, small_uploads_per_s,
calendar_events_per_s, plus microsoft365_events_per_s, microsoft365_single_events_per_s, google_events_per_s.
"""

from __future__ import annotations

import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

MB = 1024 * 1024
BIG = 20 * MB
CHUNK = 10 * 320 * 1024
ROUNDS = 5
TENANT = "8f5e2c1a-6b3d-4e7f-9a10-3c2d1e0f4a5b"
CLIENT_ID = "5b1f8c2e-3d4a-4b6c-8e9f-0a1b2c3d4e5f"
SECRET = "sandbox-graph-secret"
DRIVE = "b!DrYmIx-ErPdOcS-LiBrArY0000000000000000000000000000000000000"
USER = "planning@drymix.example"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _start_sandbox() -> tuple[subprocess.Popen[bytes], str]:
    port = _free_port()
    proc = subprocess.Popen([sys.executable, "-m", "sandbox", "microsoft365", "--port", str(port), "--log-level", "warning"], cwd=ROOT)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{url}/_sandbox/health", timeout=1).status_code == 200:
                return proc, url
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    proc.kill()
    raise RuntimeError("the Microsoft 365 sandbox did not start")


def _configure(url: str, tmp: Path) -> None:
    os.environ.update({
        "MICROSOFT365_BASE_URL": f"{url}/v1.0/",
        "MICROSOFT365_TOKEN_URL": url + "/{tenant}/oauth2/v2.0/token",
        "MICROSOFT365_TENANT_ID": TENANT,
        "MICROSOFT365_CLIENT_ID": CLIENT_ID,
        "MICROSOFT365_CLIENT_SECRET": SECRET,
        "MICROSOFT365_DRIVE_ID": DRIVE,
        "MICROSOFT365_CALENDAR_USER": USER,
        "LOG_DIR": str(tmp / "logs"),
    })
    from hub.core.settings import reset_settings_cache

    reset_settings_cache()


def _plain_upload(http: httpx.Client, url: str, token: str, data: bytes, name: str) -> float:
    """The same session protocol with bare httpx (a pooled client too): create the session, PUT the fragments."""
    started = time.perf_counter()
    session = http.post(
        f"{url}/v1.0/drives/{DRIVE}/root:/ERP/Invoices/{name}:/createUploadSession",
        json={"item": {"@microsoft.graph.conflictBehavior": "replace", "name": name, "fileSize": len(data)}},
        headers={"Authorization": f"Bearer {token}"},
    ).json()
    for start in range(0, len(data), CHUNK):
        end = min(len(data), start + CHUNK) - 1
        answer = http.put(session["uploadUrl"], content=data[start : end + 1], headers={"Content-Range": f"bytes {start}-{end}/{len(data)}"})
        answer.raise_for_status()
    return time.perf_counter() - started


def _event(i: int, prefix: str) -> dict[str, Any]:
    start = datetime.now(UTC).replace(microsecond=0) + timedelta(days=1, minutes=30 * i)
    return {
        "subject": f"Delivery {prefix}-{i:06d}",
        "start": {"dateTime": start.strftime("%Y-%m-%dT%H:%M:%S"), "timeZone": "UTC"},
        "end": {"dateTime": (start + timedelta(hours=1)).strftime("%Y-%m-%dT%H:%M:%S"), "timeZone": "UTC"},
        "location": {"displayName": "Site"},
        "transactionId": f"drymix.{prefix}-{i:06d}.v1",
    }


def main() -> None:
    from hub.runtime.connections import build_microsoft365_connector

    proc, url = _start_sandbox()
    results: dict[str, Any] = {}
    try:
        with tempfile.TemporaryDirectory(prefix="m365-bench-") as tmp_name:
            tmp = Path(tmp_name)
            _configure(url, tmp)
            big = tmp / "TC-bench.pdf"
            data = os.urandom(BIG)
            big.write_bytes(data)
            connector = build_microsoft365_connector()
            try:
                connector.connect()
                token = connector.client.http.auth.cache.get("token")  # type: ignore[union-attr]
                connector_times, plain_times = [], []
                plain = httpx.Client(timeout=60)
                for round_ in range(ROUNDS):
                    # Alternate who goes first, so neither side always meets a warm (or busy) server.
                    if round_ % 2:
                        plain_times.append(_plain_upload(plain, url, str(token), data, f"plain-{round_}.pdf"))
                    started = time.perf_counter()
                    item = connector.upload(big, "ERP/Test Certificates", f"TC-bench-{round_}.pdf", conflict="replace")
                    connector_times.append(time.perf_counter() - started)
                    assert item.size == BIG
                    if not round_ % 2:
                        plain_times.append(_plain_upload(plain, url, str(token), data, f"plain-{round_}.pdf"))
                plain.close()
                results["upload_s_per_mb"] = round(statistics.median(connector_times) / (BIG / MB), 4)
                results["upload_plain_s_per_mb"] = round(statistics.median(plain_times) / (BIG / MB), 4)
                results["upload_overhead_ratio"] = round(statistics.median(connector_times) / statistics.median(plain_times), 3)

                small = os.urandom(50 * 1024)
                started = time.perf_counter()
                count = 50
                for i in range(count):
                    connector.upload(small, "ERP/Delivery Challans", f"DC-bench-{i:04d}.pdf", conflict="replace")
                results["small_uploads_per_s"] = round(count / (time.perf_counter() - started), 2)

                started = time.perf_counter()
                batch = connector.create_events([_event(i, "BATCH") for i in range(200)])
                assert all(r.ok for r in batch)
                ms_batch = 200 / (time.perf_counter() - started)
                started = time.perf_counter()
                for i in range(30):
                    connector.create_event(_event(i, "SINGLE"))
                results["microsoft365_single_events_per_s"] = round(30 / (time.perf_counter() - started), 2)
                results["microsoft365_events_per_s"] = round(ms_batch, 2)
            finally:
                connector.close()
    finally:
        proc.terminate()
        proc.wait(timeout=10)

    google: float | None = None
    try:
        sys.path.insert(0, str(ROOT / "bench"))
        from _google import google_events_per_s  # type: ignore[import-not-found]

        google = float(google_events_per_s())
    except ImportError:
        google = None
    results["google_events_per_s"] = round(google, 2) if google is not None else None
    both = [v for v in (results["microsoft365_events_per_s"], google) if v is not None]
    results["calendar_events_per_s"] = round(min(both), 2)
    ordered = {k: results[k] for k in ("upload_s_per_mb", "upload_overhead_ratio", "small_uploads_per_s", "calendar_events_per_s")}
    ordered.update({k: v for k, v in results.items() if k not in ordered})
    print(json.dumps(ordered))


if __name__ == "__main__":
    main()
