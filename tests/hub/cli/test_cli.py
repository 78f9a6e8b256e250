"""The `drymix` CLI as a user runs it: a real process, real database, sandbox over real HTTP."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from sandbox.core import running_server
from sandbox.sap import SapSandbox

ROOT = Path(__file__).resolve().parents[3]


def drymix(*args: str, env: dict[str, str] | None = None, timeout: float = 240) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "hub.cli.main", *args],
        cwd=ROOT,
        env={**os.environ, **(env or {})},
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def test_help_answers_without_loading_prefect_or_great_expectations() -> None:
    probe = (
        "import sys, hub.cli.main; "
        "heavy = [m for m in ('prefect', 'great_expectations', 'pandas') if m in sys.modules]; "
        "print(','.join(heavy))"
    )
    out = subprocess.run([sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""
    result = drymix("--help")
    assert result.returncode == 0
    for command in ("demo", "db", "sandbox", "sync", "errors", "webhooks"):
        assert command in result.stdout


def test_db_upgrade_and_errors_list(db: str) -> None:
    upgraded = drymix("db", "upgrade")
    assert upgraded.returncode == 0, upgraded.stderr
    from alembic.script import ScriptDirectory

    from hub.core.db import alembic_config

    heads = ScriptDirectory.from_config(alembic_config(db)).get_heads()
    assert any(f"revision {head}" in upgraded.stdout for head in heads), upgraded.stdout
    listed = drymix("errors", "list", "--json")
    assert listed.returncode == 0 and listed.stdout.strip() == ""


def test_sync_command_end_to_end_over_http(db: str) -> None:
    sandbox = SapSandbox(partners=800, seed=5, max_page_size=300)
    with running_server(sandbox) as base:
        env = {"SAP_BASE_URL": f"{base}/sap/opu/odata/sap/API_BUSINESS_PARTNER/"}
        result = drymix("sync", "sap-customers", "--json", env=env)
        assert result.returncode == 0, result.stderr[-3000:]
        summary = json.loads(result.stdout.strip().splitlines()[-1])
        assert summary["extracted"] == 800
        assert summary["valid"] + summary["quarantined"] == 800
        assert summary["source_count"] == summary["distinct_read"] == 800

        # The table people read shows the read check too, next to what loaded.
        table = drymix("sync", "sap-customers", env={**env, "COLUMNS": "200"})
        assert table.returncode == 0, table.stderr[-3000:]
        assert all(figure in table.stdout for figure in ("source_count", "distinct_read", "duplicates", "quarantined"))

        errors = drymix("errors", "list", "--json", "--integration", "sap")
        rows = [json.loads(line) for line in errors.stdout.splitlines() if line.strip()]
        assert [r["error_type"] for r in rows] == ["DATA_VALIDATION_FAILED"]

        sandbox.faults.update({"expire_tokens": True})
        failed = drymix("sync", "sap-customers", "--json", env=env)
    assert failed.returncode == 1
    assert "AUTHENTICATION_FAILED" in failed.stderr
    assert "drymix errors list" in failed.stderr
    assert "sandbox-secret" not in failed.stderr + failed.stdout


def test_webhooks_token_and_rejections_commands(db: str) -> None:
    from datetime import UTC, datetime

    from hub.ingress.inbox import DbTokenStore, PendingRejection
    from hub.ingress.security import Reason
    from hub.ingress.writer import write_to_database

    issued = drymix("webhooks", "token", "razorpay", "--ttl-hours", "1")
    assert issued.returncode == 0, issued.stderr
    token = issued.stdout.strip()
    store = DbTokenStore()
    assert store.spend_and_store("razorpay", token, "a" * 64, [], datetime.now(UTC)) is None
    assert store.spend_and_store("razorpay", token, "a" * 64, [], datetime.now(UTC)) is None  # the same delivery's retry
    assert store.spend_and_store("razorpay", token, "b" * 64, [], datetime.now(UTC)) == Reason.TOKEN_REPLAYED

    write_to_database([], [PendingRejection("razorpay", "bad_signature", "198.51.100.1", datetime.now(UTC))] * 2)
    counted = drymix("webhooks", "rejections", "--provider", "razorpay", "--json")
    assert counted.returncode == 0, counted.stderr
    assert json.loads(counted.stdout) == {"bad_signature": 2}
    table = drymix("webhooks", "rejections")
    assert table.returncode == 0 and "bad_signature" in table.stdout


def test_webhooks_replay_and_process_commands(db: str) -> None:
    from datetime import UTC, datetime

    import orjson

    from hub.core.db import get_engine
    from hub.ingress.inbox import PendingEvent, list_events, write_batch

    body = orjson.dumps({"event": "payment.authorized", "created_at": 1_764_000_000, "payload": {"payment": {"entity": {
        "id": "pay_Cli00000000001", "order_id": "order_Cli0000000001", "status": "authorized", "created_at": 1_764_000_000}}}})
    with get_engine().begin() as conn:
        write_batch(conn, [PendingEvent("razorpay", "evt_cli", "payment.authorized", body, {}, None, datetime.now(UTC))], [])
    missing = drymix("webhooks", "replay", "evt_nope")
    assert missing.returncode == 1 and "no stored event" in missing.stderr
    processed = drymix("webhooks", "process", "--json")
    assert processed.returncode == 0, processed.stderr
    assert json.loads(processed.stdout.strip().splitlines()[-1])["applied"] == 1
    assert drymix("webhooks", "replay", "evt_cli").returncode == 0
    assert [e.event_id for e in list_events()] == ["evt_cli"]
    again = drymix("webhooks", "process", "--json")
    assert json.loads(again.stdout.strip().splitlines()[-1])["duplicate"] == 1
    assert "--webhook-url" in drymix("sandbox", "razorpay", "--help").stdout
