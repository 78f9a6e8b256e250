"""The durable inbox: group commit, claiming and marking events, and a crash after acknowledgement."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest

from hub.core.db import get_engine
from hub.ingress.inbox import (
    PendingEvent,
    PendingRejection,
    claim_received,
    list_events,
    mark_failed,
    mark_processed,
    rejection_counts,
)
from hub.ingress.writer import GroupCommitWriter, write_to_database
from tests.hub.ingress.conftest import RZP_SECRET, WA_SECRET, razorpay_body, razorpay_headers, stored_events

ROOT = Path(__file__).resolve().parents[3]


def _event(event_id: str) -> PendingEvent:
    return PendingEvent("razorpay", event_id, "payment.captured", b"{}", {"content-type": "application/json"}, "127.0.0.1", datetime.now(UTC))


def test_group_commit_batches_concurrent_events_and_acknowledges_after_commit(db: str) -> None:
    batch_sizes: list[int] = []

    def recording_write(events: Sequence[PendingEvent], rejections: Sequence[PendingRejection]) -> None:
        write_to_database(events, rejections)
        batch_sizes.append(len(events))

    async def run() -> None:
        writer = GroupCommitWriter(recording_write, max_batch=50, max_wait_s=0.005)
        await asyncio.gather(*(writer.submit(events=[_event(f"evt_{i}")]) for i in range(200)))
        # Every submit returned, so every event is already committed.
        assert stored_events() == 200
        await writer.aclose()

    asyncio.run(run())
    assert sum(batch_sizes) == 200 and max(batch_sizes) <= 50
    assert len(batch_sizes) < 20  # one transaction per batch, not per event


def test_one_failing_write_does_not_fail_its_batch_neighbours(db: str) -> None:
    def picky_write(events: Sequence[PendingEvent], rejections: Sequence[PendingRejection]) -> None:
        if any(e.event_id == "evt_poison" for e in events):
            raise RuntimeError("constraint violated")
        write_to_database(events, rejections)

    async def run() -> list[BaseException | None]:
        writer = GroupCommitWriter(picky_write, max_wait_s=0.01)
        results = await asyncio.gather(
            *(writer.submit(events=[_event(eid)]) for eid in ("evt_a", "evt_poison", "evt_b")), return_exceptions=True
        )
        await writer.aclose()
        return list(results)

    results = asyncio.run(run())
    assert results[0] is None and results[2] is None and isinstance(results[1], RuntimeError)
    assert sorted(e.event_id for e in list_events()) == ["evt_a", "evt_b"]


def test_rejections_are_counted_per_reason_in_minute_windows(db: str) -> None:
    now = datetime.now(UTC)
    write_to_database([], [PendingRejection("razorpay", "bad_signature", "198.51.100.1", now)] * 3)
    write_to_database([], [PendingRejection("razorpay", "bad_signature", "198.51.100.2", now), PendingRejection("whatsapp", "ip_not_allowed", None, now)])
    assert rejection_counts(provider="razorpay") == {"bad_signature": 4}
    assert rejection_counts() == {"bad_signature": 4, "ip_not_allowed": 1}


def test_claim_then_mark_processed_or_failed(db: str) -> None:
    write_to_database([_event("evt_1"), _event("evt_2"), _event("evt_3")], [])
    with get_engine().begin() as conn:
        claimed = claim_received(conn, provider="razorpay", limit=2)
        assert [e.event_id for e in claimed] == ["evt_1", "evt_2"] and all(e.attempts == 1 for e in claimed)
        assert mark_processed(conn, [claimed[0].id]) == 1
        mark_failed(conn, claimed[1].id, "payment not found; key_secret=abc123")
    assert [e.event_id for e in list_events()] == ["evt_3"]
    [failed] = list_events(status="failed")
    assert failed.attempts == 1
    with get_engine().connect() as conn:
        last_error = conn.exec_driver_sql("SELECT last_error FROM webhook_events WHERE event_id = 'evt_2'").scalar_one()
    assert "abc123" not in last_error
    [processed] = list_events(status="processed")
    assert processed.event_id == "evt_1"


def test_concurrent_drainers_never_claim_the_same_event(db: str) -> None:
    """PostgreSQL: each skips the rows the other locked. SQLite (no row locks): the second waits for the first's
    commit and finds its events processed. Before, on SQLite both claimed and applied all ten."""
    import threading

    write_to_database([_event(f"evt_{n}") for n in range(10)], [])
    claimed: dict[str, list[int]] = {}
    start = threading.Barrier(2)

    def drain(name: str) -> None:
        start.wait()
        with get_engine().begin() as conn:
            events = claim_received(conn, provider="razorpay", limit=10)
            claimed[name] = [e.id for e in events]
            time.sleep(0.3)  # applying them, while the other drainer runs
            mark_processed(conn, [e.id for e in events])

    threads = [threading.Thread(target=drain, args=(name,)) for name in ("a", "b")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert not set(claimed["a"]) & set(claimed["b"])
    assert len(claimed["a"]) + len(claimed["b"]) == 10
    assert list_events() == [] and len(list_events(status="processed")) == 10


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.mark.timeout(120)
def test_crash_after_acknowledgement_loses_nothing(db: str) -> None:
    port = _free_port()
    env = {**os.environ, "RAZORPAY_WEBHOOK_SECRETS": RZP_SECRET, "WHATSAPP_APP_SECRETS": WA_SECRET}
    server = subprocess.Popen(
        [sys.executable, "-m", "hub.cli.main", "webhooks", "serve", "--port", str(port), "--log-level", "warning", "--monitor-port", "0"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(f"{base}/health", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert server.poll() is None and time.monotonic() < deadline, "ingress did not start"
            time.sleep(0.1)
        acknowledged = []
        for i in range(5):
            body = razorpay_body(payment_id=f"pay_crash{i}")
            headers = razorpay_headers(body, event_id=f"evt_crash{i}")
            assert httpx.post(f"{base}/webhooks/razorpay", content=body, headers=headers, timeout=10).status_code == 200
            acknowledged.append(f"evt_crash{i}")
    finally:
        # The hardest stop there is: no shutdown hook, no flush, no goodbye.
        server.send_signal(signal.SIGKILL)
        server.wait(timeout=10)
    pending = list_events(provider="razorpay")
    assert [e.provider_event_id for e in pending] == acknowledged
    assert all(e.status == "received" for e in pending)
    with get_engine().begin() as conn:
        assert len(claim_received(conn)) == 5
