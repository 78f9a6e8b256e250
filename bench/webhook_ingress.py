"""Webhook ingress benchmark: verified-and-stored events per second against a bare endpoint, and latency at 200/s.

Run: `.venv/bin/python bench/webhook_ingress.py` (DATABASE_URL selects the database; PostgreSQL for
real figures). The ingress runs as `drymix webhooks serve` (uvicorn, one worker) in a subprocess on
loopback with `WEBHOOK_BENCH_BARE=1`, which adds `POST /bench/bare` (reads the body, does nothing) to
the same app. A small raw HTTP/1.1 keep-alive client drives it with signed Razorpay-shaped events
(httpx's own overhead would otherwise be what is measured). Every loop is bounded in time. The bare
and the stored endpoint are measured interleaved (each sender level twice), so other load on the
machine during the run weighs on both alike; each keeps its best.

In the same run, the plan's Razorpay targets against the Razorpay sandbox served over real HTTP
(`python -m sandbox razorpay` in a subprocess): create-order through the connector on an open-loop
schedule of 100/s, and checkout payment-signature verification (of real sandbox payments) at 200/s;
each reports the achieved rate and the p99 latency measured from the scheduled send time.

Last line: one JSON object with events_per_s, bare_per_s, ratio_to_bare, p50_ms, p95_ms, p99_ms,
razorpay_create_order_per_s, razorpay_create_order_p99_ms, razorpay_verify_per_s, razorpay_verify_p99_ms.
"""

from __future__ import annotations

import asyncio
import collections
import itertools
import json
import os
import socket
import statistics
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
from sqlalchemy import text

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from hub.core.db import get_engine, upgrade  # noqa: E402
from hub.core.settings import reset_settings_cache  # noqa: E402
from hub.ingress.security import sign  # noqa: E402
from hub.runtime.connections import build_razorpay_connector  # noqa: E402

SECRET = b"bench-webhook-secret"
HOST = "127.0.0.1"
# Each endpoint is driven at every level and keeps its best: the group-committing endpoint needs
# more requests in flight to keep its event loop busy while a batch commits.
SENDER_LEVELS = (128, 512)
CLOSED_LOOP_SECONDS = 4.0
WARMUP_SECONDS = 1.0
OPEN_LOOP_RATE = 200
OPEN_LOOP_SECONDS = 10.0
RUN_ID = uuid.uuid4().hex[:8]
CREATE_ORDER_RATE = 100
CREATE_ORDER_SECONDS = 10.0
VERIFY_RATE = 200
VERIFY_SECONDS = 10.0
acknowledged = 0  # events answered 200: each one must be in webhook_events afterwards


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


class Connection:
    """One keep-alive HTTP/1.1 connection speaking just enough of the protocol for this benchmark."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer

    @classmethod
    async def open(cls, port: int) -> Connection:
        reader, writer = await asyncio.open_connection(HOST, port)
        return cls(reader, writer)

    async def post(self, path: str, body: bytes, headers: dict[str, str]) -> int:
        head = "".join(f"{k}: {v}\r\n" for k, v in headers.items())
        self.writer.write(
            f"POST {path} HTTP/1.1\r\nhost: {HOST}\r\ncontent-type: application/json\r\ncontent-length: {len(body)}\r\n{head}\r\n".encode()
            + body
        )
        raw = await self.reader.readuntil(b"\r\n\r\n")
        lines = raw.decode("latin-1").split("\r\n")
        status = int(lines[0].split(" ", 2)[1])
        length = next(int(line.split(":", 1)[1]) for line in lines if line.lower().startswith("content-length:"))
        await self.reader.readexactly(length)
        return status

    def close(self) -> None:
        self.writer.close()


class Events:
    """Signed Razorpay-shaped deliveries, each a new event (so each one is a new stored row).

    The inbox key comes from the signed body (`<event>:<entity id>:<created_at>`), so a new event
    needs a new body: the body is serialised once with a placeholder payment id, and each request
    only splices its number in and signs (one HMAC, microseconds). Keeping the client cheap leaves
    the shared CPUs to the server being measured. `x-razorpay-event-id` (unsigned, information only)
    names the run, so the benchmark's rows can be removed afterwards.
    """

    # One sequence for the whole run: a repeated payment id would be a (cheaper) duplicate delivery.
    sequence = itertools.count(1)
    PLACEHOLDER = b"pay_BENCHPLACEHOLDER"

    def __init__(self) -> None:
        self.template = json.dumps(
            {
                "entity": "event",
                "account_id": "acc_BENCH",
                "event": "payment.captured",
                "contains": ["payment"],
                "payload": {"payment": {"entity": {"id": self.PLACEHOLDER.decode(), "amount": 50000, "currency": "INR", "status": "captured", "order_id": "order_BENCH", "method": "upi", "captured": True}}},
                "created_at": int(time.time()),
            },
            separators=(",", ":"),
        ).encode()

    def next(self) -> tuple[bytes, dict[str, str]]:
        n = next(Events.sequence)
        body = self.template.replace(self.PLACEHOLDER, f"pay_b{RUN_ID[:8]}{n:010d}".encode())
        return body, {"x-razorpay-signature": sign(SECRET, body), "x-razorpay-event-id": f"bench-{RUN_ID}-{n}"}


def _acknowledge(path: str) -> None:
    global acknowledged
    if path == "/webhooks/razorpay":
        acknowledged += 1


async def closed_loop(port: int, path: str, seconds: float, senders: int) -> float:
    """Requests per second with `senders` senders, each waiting for its answer before sending the next."""
    events = Events()
    conns = [await Connection.open(port) for _ in range(senders)]
    counted = 0
    failures = 0
    start = time.perf_counter()
    measure_from = start + WARMUP_SECONDS
    stop = measure_from + seconds

    async def sender(conn: Connection) -> None:
        nonlocal counted, failures
        while (now := time.perf_counter()) < stop:
            body, headers = events.next()
            status = await conn.post(path, body, headers)
            if status != 200:
                failures += 1
                continue
            _acknowledge(path)
            if now >= measure_from:
                counted += 1

    await asyncio.gather(*(sender(c) for c in conns))
    for c in conns:
        c.close()
    if failures:
        raise RuntimeError(f"{failures} requests to {path} were not answered 200")
    return counted / seconds


async def open_loop(port: int, rate: int, seconds: float) -> list[float]:
    """Latencies (ms) of requests sent on a fixed schedule, measured from their scheduled time."""
    events = Events()
    idle: collections.deque[Connection] = collections.deque()
    latencies: list[float] = []
    total = int(rate * seconds)
    start = time.perf_counter() + 0.2

    async def one(scheduled: float) -> None:
        # Oldest idle connection first, so none idles past the server's keep-alive timeout.
        conn = idle.popleft() if idle else await Connection.open(port)
        body, headers = events.next()
        try:
            status = await conn.post("/webhooks/razorpay", body, headers)
        except (asyncio.IncompleteReadError, ConnectionError):
            # The server closed this keep-alive connection first: resend on a new one, as any client does.
            conn.close()
            conn = await Connection.open(port)
            status = await conn.post("/webhooks/razorpay", body, headers)
        if status != 200:
            raise RuntimeError(f"open-loop request answered {status}")
        _acknowledge("/webhooks/razorpay")
        latencies.append((time.perf_counter() - scheduled) * 1000)
        idle.append(conn)

    tasks = []
    for i in range(total):
        scheduled = start + i / rate
        delay = scheduled - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(one(scheduled)))
    await asyncio.wait_for(asyncio.gather(*tasks), timeout=60)
    for c in idle:
        c.close()
    return latencies


def percentile(values: list[float], q: float) -> float:
    return statistics.quantiles(values, n=1000, method="inclusive")[int(q * 1000) - 1]


def paced(fn: Callable[[int], object], rate: int, seconds: float, workers: int) -> tuple[float, list[float], list[object]]:
    """Call fn(i) on an open-loop schedule of `rate`/s; (achieved rate, latencies ms from schedule, results)."""
    total = int(rate * seconds)
    latencies: list[float] = [0.0] * total
    results: list[object] = [None] * total
    finished: list[float] = [0.0] * total

    def run(i: int, scheduled: float) -> None:
        results[i] = fn(i)
        finished[i] = time.perf_counter()
        latencies[i] = (finished[i] - scheduled) * 1000

    start = time.perf_counter() + 0.1
    with ThreadPoolExecutor(max_workers=workers) as pool:
        futures = []
        for i in range(total):
            scheduled = start + i / rate
            delay = scheduled - time.perf_counter()
            if delay > 0:
                time.sleep(delay)
            futures.append(pool.submit(run, i, scheduled))
        for future in futures:
            future.result(timeout=60)
    return total / (max(finished) - start), latencies, results


def razorpay_targets() -> dict[str, float]:
    """Create-order at 100/s and verify-payment at 200/s against the Razorpay sandbox over real HTTP."""
    port = _free_port()
    sandbox = subprocess.Popen(
        [sys.executable, "-m", "sandbox", "razorpay", "--host", HOST, "--port", str(port), "--log-level", "warning"],
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
    )
    base = f"http://{HOST}:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(f"{base}/_sandbox/health", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if sandbox.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("the Razorpay sandbox did not start")
            time.sleep(0.1)
        os.environ.update(
            RAZORPAY_BASE_URL=f"{base}/v1/", RAZORPAY_KEY_ID="rzp_test_drymix", RAZORPAY_KEY_SECRET="sandbox-key-secret"
        )
        reset_settings_cache()
        with build_razorpay_connector() as connector, httpx.Client(base_url=base) as control:
            create_rate, create_ms, orders = paced(
                lambda i: connector.create_order(10_000 + i, f"bench-{RUN_ID}-{i}"), CREATE_ORDER_RATE, CREATE_ORDER_SECONDS, 16
            )
            print(f"create order: {len(orders)} at {CREATE_ORDER_RATE}/s -> {create_rate:.1f}/s", file=sys.stderr)
            triples: list[tuple[str, str, str]] = []
            for order in orders[:100]:
                assert isinstance(order, dict)
                paid = control.post("/_sandbox/razorpay/pay", json={"order_id": order["id"]}).json()
                triples.append((order["id"], paid["razorpay_payment_id"], paid["razorpay_signature"]))
            verify_rate, verify_ms, verdicts = paced(
                lambda i: connector.verify_payment_signature(*triples[i % len(triples)]), VERIFY_RATE, VERIFY_SECONDS, 4
            )
            print(f"verify payment: {len(verdicts)} at {VERIFY_RATE}/s -> {verify_rate:.1f}/s", file=sys.stderr)
            if not all(verdicts):
                raise RuntimeError("a genuine sandbox payment signature did not verify")
    finally:
        sandbox.terminate()
        sandbox.wait(timeout=30)
    return {
        "razorpay_create_order_per_s": round(create_rate, 1),
        "razorpay_create_order_p99_ms": round(percentile(create_ms, 0.99), 2),
        "razorpay_verify_per_s": round(verify_rate, 1),
        "razorpay_verify_p99_ms": round(percentile(verify_ms, 0.99), 3),
    }


def main() -> None:
    upgrade()
    port = _free_port()
    env = {**os.environ, "RAZORPAY_WEBHOOK_SECRETS": SECRET.decode(), "WEBHOOK_BENCH_BARE": "1"}
    server = subprocess.Popen(
        [sys.executable, "-m", "hub.cli.main", "webhooks", "serve", "--host", HOST, "--port", str(port), "--log-level", "warning",
         "--monitor-port", "0"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(f"http://{HOST}:{port}/health", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if server.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("the ingress did not start")
            time.sleep(0.1)
        print(f"ingress on {HOST}:{port} (pid {server.pid}); senders {SENDER_LEVELS}, {CLOSED_LOOP_SECONDS}s each", file=sys.stderr)
        rates: dict[str, float] = {}
        # Interleaved (bare, stored at each level, then again), so a change in the machine's other load
        # during the run weighs on both endpoints alike; each endpoint keeps its best.
        for senders in (*SENDER_LEVELS, *SENDER_LEVELS):
            for name, path in (("bare", "/bench/bare"), ("stored", "/webhooks/razorpay")):
                rate = asyncio.run(closed_loop(port, path, CLOSED_LOOP_SECONDS, senders))
                print(f"{name}: {senders} senders -> {rate:.0f} req/s", file=sys.stderr)
                rates[name] = max(rates.get(name, 0.0), rate)
        bare, stored = rates["bare"], rates["stored"]
        latencies = asyncio.run(open_loop(port, OPEN_LOOP_RATE, OPEN_LOOP_SECONDS))
        print(f"open loop: {len(latencies)} requests at {OPEN_LOOP_RATE}/s", file=sys.stderr)
    finally:
        server.terminate()
        server.wait(timeout=30)
    with get_engine().begin() as conn:
        kept: int = conn.execute(
            text("DELETE FROM webhook_events WHERE provider_event_id LIKE :prefix"), {"prefix": f"bench-{RUN_ID}-%"}
        ).rowcount
    print(f"removed the {kept} benchmark events from webhook_events", file=sys.stderr)
    if kept != acknowledged:
        raise RuntimeError(f"{acknowledged} events were acknowledged but {kept} were stored")
    razorpay = razorpay_targets()
    print(
        json.dumps(
            {
                "events_per_s": round(stored, 1),
                "bare_per_s": round(bare, 1),
                "ratio_to_bare": round(stored / bare, 3),
                "p50_ms": round(percentile(latencies, 0.50), 2),
                "p95_ms": round(percentile(latencies, 0.95), 2),
                "p99_ms": round(percentile(latencies, 0.99), 2),
                **razorpay,
            }
        )
    )


if __name__ == "__main__":
    main()
