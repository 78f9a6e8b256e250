"""The plan's performance table, every row measured against its simulator over real HTTP (the plant over OPC UA).

Run: `DATABASE_URL=postgresql+psycopg://postgres@127.0.0.1:5432/<db> .venv/bin/python bench/performance_table.py`
(`make bench`). `--seconds` sets each open-loop run's length (default 10), `--only ROW` runs some rows; the
SAP row runs bench/sap_writeback.py (`--sap-creates`/`--sap-updates`). About 3 minutes with the defaults.

Each simulator runs in its own process, as the real system runs on its own machine, and each request goes
through the connector (and, where the plan's operation includes it, the hub's database write):

| row | one operation |
|---|---|
| razorpay_create_order | `RazorpayConnector.create_order` (POST /orders, receipt-idempotent) |
| razorpay_verify_payment | the checkout callback the ERP calls, end to end: `hub.systems.razorpay.confirm_checkout` (the order WE stored read from `payments`, the callback's signature checked against it, the payment recorded forward-only under the row lock), each call a first callback of its own paid order |
| whatsapp_send_message | `WhatsAppConnector.send_template` to a new recipient, then `record_sent` in `whatsapp_messages` (what `drymix whatsapp send` does per number) |
| microsoft365_upload | a 1 MB document by `Microsoft365Connector.upload` (one simple PUT); latency in ms per MB |
| google_calendar_event | `GoogleCalendarConnector.insert_event` with our own event id |
| sap_sync_customer | bench/sap_writeback.py: customers pushed by the `push_sap_customers` flow (`$batch`, 20 requests/s budget) |
| plant_read_status | `PlantConnector.read_tags` of 100 status tags (one OPC UA Read) |
| lab_read_test | one page (`[lab] page_size` results) of the testing machine's results API through `LabApiConnector.fetch_page` |

Load: every row but SAP is an open loop at the plan's target rate for `--seconds` (requests sent on a fixed
schedule whether or not earlier ones have answered, from a thread pool, or as asyncio tasks for OPC UA), so a
system that cannot keep up shows it as growing latency. Latency runs from each request's scheduled send time
to its answer (queueing behind the connector's rate budget included). Throughput (`per_s`) is requests /
(last answer - first scheduled send): sustained at the target rate. The connectors keep their configured rate
budgets (config/integrations.toml), as production runs. SAP is measured as fast as the flow goes (its own
benchmark's `pushes_per_s`, `push_p50/p95/p99_ms` of each customer's push).

`meets`: p95 <= the latency target (the plan's SLAs are P95, config/monitoring.toml) and the rate kept up: the
last answer came within the latency target of its scheduled time (`per_s >= target x n / (n - 1 + target x
latency target)`; SAP: its benchmark's own `meets`, >= 20 pushes/s and no failures).

Output: a Rich table, one JSON object per row, then the last line one JSON object with every row.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

HOST = "127.0.0.1"
RUN_ID = uuid.uuid4().hex[:8]
MB = 1024 * 1024


@dataclass
class Row:
    """One row of the plan's table: what was measured and whether it meets the plan."""

    row: str
    operation: str
    target_ms: float
    target_per_s: float
    p50_ms: float
    p95_ms: float
    p99_ms: float
    per_s: float
    ops: int
    load: str
    latency_unit: str = "ms"
    meets_latency: bool = False
    meets_throughput: bool = False
    meets: bool = False
    extra: dict[str, Any] = field(default_factory=dict)


def percentile(values: list[float], pct: float) -> float:
    """Nearest-rank percentile (no interpolation: a figure one request really took)."""
    from sap_writeback import percentile as nearest_rank

    return float(nearest_rank(values, pct))


def judged(row: Row) -> Row:
    """Set the meets flags from the figures (see the module docstring)."""
    row.meets_latency = row.ops > 0 and row.p95_ms <= row.target_ms
    if row.ops > 1:
        target_s = row.target_ms / 1000 * (row.extra.get("mb", 1.0) if row.latency_unit == "ms/MB" else 1.0)
        row.meets_throughput = row.per_s >= row.target_per_s * row.ops / (row.ops - 1 + row.target_per_s * target_s)
    row.meets = row.meets_latency and row.meets_throughput
    return row


def open_loop_row(name: str, operation: str, fn: Callable[[int], object], *, rate: float, seconds: float, target_ms: float,
                  workers: int, per: float = 1.0, unit: str = "ms", extra: dict[str, Any] | None = None,
                  warmup: Callable[[int], object] | None = None) -> Row:
    """Run fn(i) at `rate`/s for `seconds` (bench/webhook_ingress.py's `paced`) and make its row.

    `warmup(k)` runs 5 times first, untimed: a worker that has been running for hours has its connections
    open and its lazy imports done, and the first calls of a fresh process would otherwise be its p99."""
    from webhook_ingress import paced

    for k in range(5 if warmup else 0):
        warmup(k)  # type: ignore[misc]
    per_s, latencies, _ = paced(fn, max(1, round(rate)), seconds, workers)
    scaled = [ms / per for ms in latencies]
    return judged(Row(name, operation, target_ms, rate, percentile(scaled, 50), percentile(scaled, 95), percentile(scaled, 99),
                      round(per_s, 1), len(latencies), f"open loop at {rate:g}/s for {seconds:g} s", unit, extra=extra or {}))


# -- simulators --------------------------------------------------------------------------------------------


def free_port() -> int:
    from plant_lab import free_port as plant_free_port

    return plant_free_port()


@contextlib.contextmanager
def http_sandbox(system: str, *args: str, health: str = "/_sandbox/health") -> Iterator[str]:
    """`python -m sandbox <system>` in its own process on a free port; yields its base URL, stops it after."""
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "sandbox", system, "--host", HOST, "--port", str(port), *args],
                            cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    base = f"http://{HOST}:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(base + health, timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the {system} sandbox did not start")
            time.sleep(0.1)
        yield base
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def _settings(**env: str) -> None:
    from hub.core.settings import reset_settings_cache

    os.environ.update(env)
    reset_settings_cache()


# -- rows --------------------------------------------------------------------------------------------------


def razorpay_rows(seconds: float) -> list[Row]:
    """Create order at 100/s, then the checkout callback (verify payment) at 200/s, one Razorpay sandbox."""
    from sqlalchemy import delete

    from hub.core.db import get_engine
    from hub.core.models import Payment
    from hub.runtime.connections import build_razorpay_connector
    from hub.systems.razorpay import RECORDED, confirm_checkout, record_order

    rows: list[Row] = []
    engine = get_engine()
    with http_sandbox("razorpay", "--log-level", "warning") as base:
        _settings(RAZORPAY_BASE_URL=f"{base}/v1/", RAZORPAY_KEY_ID="rzp_test_drymix", RAZORPAY_KEY_SECRET="sandbox-key-secret")
        connector = build_razorpay_connector()  # typed as itself: `with ... as` would give the base Connector
        with connector, httpx.Client(base_url=base) as control:
            rows.append(open_loop_row(
                "razorpay_create_order", "POST /orders through the connector",
                lambda i: connector.create_order(10_000 + i, f"bench-{RUN_ID}-{i}"),
                rate=100, seconds=seconds, target_ms=500, workers=16,
                warmup=lambda k: connector.create_order(10_000, f"bench-{RUN_ID}-w{k}"),
            ))
            # Orders the ERP created and stored, each paid at the sandbox's checkout: one callback per timed call
            # (and per warm-up call), so every call is a first callback, the write path, not a replay answered
            # from the row. Setup, untimed: the orders go to the sandbox's API directly, since the connector's
            # 100/s budget would spend 20 s on them.
            key = (os.environ["RAZORPAY_KEY_ID"], os.environ["RAZORPAY_KEY_SECRET"])
            callbacks: list[tuple[str, str, str]] = []
            orders: list[dict[str, Any]] = []
            for i in range(int(200 * seconds) + 5):
                order = control.post("/v1/orders", auth=key, json={"amount": 20_000 + i, "currency": "INR",
                                                                   "receipt": f"bench-{RUN_ID}-cb-{i}"}).json()
                orders.append(order)
                paid = control.post("/_sandbox/razorpay/pay", json={"order_id": order["id"], "outcome": "captured"}).json()
                callbacks.append((paid["razorpay_order_id"], paid["razorpay_payment_id"], paid["razorpay_signature"]))
            with engine.begin() as conn:
                for order in orders:
                    record_order(conn, order)
            outcomes: list[str] = []

            def checkout_callback(i: int) -> str:
                """What the ERP calls before it tells the customer "paid" (`drymix razorpay checkout-callback`)."""
                outcome = confirm_checkout(*callbacks[i], connector=connector, engine=engine).outcome
                outcomes.append(outcome)
                return outcome

            try:
                rows.append(open_loop_row(
                    "razorpay_verify_payment", "checkout callback (confirm_checkout): stored order, signature, payments row",
                    checkout_callback, rate=200, seconds=seconds, target_ms=300, workers=16,
                    warmup=lambda k: checkout_callback(len(callbacks) - 1 - k),
                    extra={"callbacks": len(callbacks) - 5},
                ))
                if set(outcomes) != {RECORDED}:
                    raise RuntimeError(f"genuine first callbacks not all recorded: {sorted(set(outcomes))}")
            finally:
                with engine.begin() as conn:
                    conn.execute(delete(Payment).where(Payment.receipt.like(f"bench-{RUN_ID}-%")))
    return rows


def whatsapp_row(seconds: float) -> Row:
    """Template messages at 20/s, each to a new recipient (Meta refuses a second message to one within 6 s)."""
    from sqlalchemy import delete

    from hub.core.db import get_engine
    from hub.core.models import WhatsAppMessage
    from hub.runtime.connections import build_whatsapp_connector
    from hub.systems.whatsapp import record_sent

    engine = get_engine()
    prefix = f"9197{int(RUN_ID, 16) % 10_000:04d}"
    with http_sandbox("whatsapp", "--log-level", "warning") as base:
        _settings(WHATSAPP_BASE_URL=f"{base}/v21.0/", WHATSAPP_PHONE_NUMBER_ID="100000000000001",
                  WHATSAPP_ACCESS_TOKEN="sandbox-whatsapp-token")
        connector = build_whatsapp_connector()
        with connector:

            def send(i: int) -> str:
                answer = connector.send_template(f"+{prefix}{i:06d}", "hello_world", "en_US")
                with engine.begin() as conn:
                    return record_sent(conn, answer, phone_number_id=connector.phone_number_id, message_type="template",
                                       template_name="hello_world")

            try:
                return open_loop_row("whatsapp_send_message", "template send + whatsapp_messages row", send,
                                     rate=20, seconds=seconds, target_ms=1000, workers=16, warmup=lambda k: send(999_999 - k))
            finally:
                with engine.begin() as conn:
                    conn.execute(delete(WhatsAppMessage).where(WhatsAppMessage.recipient.like(f"{prefix}%")))


def microsoft365_row(seconds: float) -> Row:
    """1 MB documents at 10/s by the connector's simple upload (the plan: < 2 s per MB, 10 uploads/s)."""
    from m365_google import _configure, _start_sandbox

    from hub.runtime.connections import build_microsoft365_connector

    size = 1 * MB
    proc, url = _start_sandbox()
    try:
        with tempfile.TemporaryDirectory(prefix="perf-table-m365-") as tmp:
            _configure(url, Path(tmp))
            document = os.urandom(size)
            connector = build_microsoft365_connector()
            with connector:
                connector.connect()  # the client-credentials token, once, as a long-running worker holds it
                return open_loop_row(
                    "microsoft365_upload", "1 MB document, simple upload (PUT)",
                    lambda i: connector.upload(document, "ERP/Test Certificates", f"TC-{RUN_ID}-{i:05d}.pdf", conflict="replace"),
                    rate=10, seconds=seconds, target_ms=2000, workers=16, per=size / MB, unit="ms/MB",
                    extra={"mb": size / MB, "microsoft365_rate_budget_per_s": connector.client.config.rate_budget_per_s},
                    warmup=lambda k: connector.upload(document, "ERP/Test Certificates", f"TC-{RUN_ID}-w{k}.pdf", conflict="replace"),
                )
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def google_row(seconds: float) -> Row:
    """Calendar events inserted at 50/s with our own event ids, under the configured rate budget."""
    from _google import _bodies, _start_sandbox, build_connector

    events = max(2, int(50 * seconds))
    with tempfile.TemporaryDirectory(prefix="perf-table-google-") as tmp:
        key_file = Path(tmp) / "key.json"
        proc, url = _start_sandbox(key_file)
        try:
            bodies = _bodies(f"T{RUN_ID}", events + 5)  # the last 5 for the warm-up
            with build_connector(url, key_file) as connector:
                connector.connect()
                return open_loop_row(
                    "google_calendar_event", "events.insert with our event id", lambda i: connector.insert_event(bodies[i]),
                    rate=50, seconds=seconds, target_ms=500, workers=16,
                    extra={"google_rate_budget_per_s": connector.client.config.rate_budget_per_s},
                    warmup=lambda k: connector.insert_event(bodies[events + k]),
                )
        finally:
            proc.terminate()
            proc.wait(timeout=10)


def sap_row(creates: int, updates: int) -> Row:
    """bench/sap_writeback.py in its own process (it starts its own Prefect server); its last line is the row."""
    out = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "sap_writeback.py"), "--creates", str(creates), "--updates", str(updates),
         "--baseline", str(max(4, creates // 4))],
        cwd=ROOT, capture_output=True, text=True, check=True, env=os.environ.copy(),
    )
    result = json.loads(out.stdout.strip().splitlines()[-1])
    row = Row("sap_sync_customer", "customer pushed by push_sap_customers ($batch, create or update)",
              float(result["target_p95_ms"]), float(result["target_per_s"]), result["push_p50_ms"], result["push_p95_ms"],
              result["push_p99_ms"], result["pushes_per_s"], result["customers_created"] + result["customers_updated"],
              "as fast as the flow goes (bench/sap_writeback.py)",
              extra={k: result[k] for k in ("failed", "refused", "conflicts", "retry_later", "rate_budget_per_s")})
    row.meets_latency = row.ops > 0 and row.p95_ms <= row.target_ms
    row.meets_throughput = row.per_s >= row.target_per_s
    row.meets = bool(result["meets"])
    return row


def plant_row(seconds: float) -> Row:
    """Reads of 100 status tags at 100/s on one OPC UA session (asyncio tasks on the schedule)."""
    import logging

    from plant_lab import TAGS, start_sandbox

    logging.getLogger("asyncua").setLevel(logging.ERROR)

    async def run(url: str) -> Row:
        from connectors.plant import PlantConnector
        from hub.core.settings import plant_opcua_config

        config = plant_opcua_config().model_copy(update={"base_url": url})
        async with PlantConnector(config) as plant:
            tags = (await plant.status_tags())[:TAGS]
            for _ in range(10):  # warm-up: the session's first reads
                await plant.read_tags(tags)
            rate, total = 100, max(2, int(100 * seconds))
            latencies: list[float] = [0.0] * total
            finished: list[float] = [0.0] * total

            # At most as many reads in flight as the HTTP rows have workers: an unbounded pile of Read requests on
            # one session times the secure channel out, which measures the pile rather than the plant.
            in_flight = asyncio.Semaphore(16)

            async def one(i: int, scheduled: float) -> None:
                async with in_flight:
                    readings = await plant.read_tags(tags)
                if len(readings) != len(tags):
                    raise RuntimeError(f"{len(readings)} readings of {len(tags)} tags")
                finished[i] = time.perf_counter()
                latencies[i] = (finished[i] - scheduled) * 1000

            start = time.perf_counter() + 0.1
            tasks = []
            for i in range(total):
                scheduled = start + i / rate
                if (delay := scheduled - time.perf_counter()) > 0:
                    await asyncio.sleep(delay)
                tasks.append(asyncio.create_task(one(i, scheduled)))
            await asyncio.wait_for(asyncio.gather(*tasks), timeout=120)
        return judged(Row("plant_read_status", f"OPC UA Read of {len(tags)} status tags", 200, rate, percentile(latencies, 50),
                          percentile(latencies, 95), percentile(latencies, 99), round(total / (max(finished) - start), 1), total,
                          f"open loop at {rate}/s for {seconds:g} s"))

    with tempfile.TemporaryDirectory(prefix="perf-table-plant-") as tmp:
        proc, url = start_sandbox(Path(tmp))
        try:
            return asyncio.run(run(url))
        finally:
            proc.terminate()
            proc.wait(timeout=30)


def lab_row(seconds: float) -> Row:
    """Pages of the testing machine's results API at 10/s, each from a different `after` in 2,000 results."""
    from connectors.lab.api import RESULTS
    from hub.runtime.connections import build_lab_api_connector

    with tempfile.TemporaryDirectory(prefix="perf-table-lab-") as tmp, \
            http_sandbox("lab", "--drop-dir", tmp, "--sessions", "10", "--rows", "200") as base:
        connector = build_lab_api_connector(base_url=base)
        with connector:
            page_size = connector.page_size
            total = len(connector.fetch_page(RESULTS, connector.start(RESULTS, {"after": 0})).records)

            def read(i: int) -> int:
                # Vary where each read starts, so no two consecutive reads ask for the same page.
                page = connector.fetch_page(RESULTS, connector.start(RESULTS, {"after": (i * 137) % 1000}))
                if not page.records:
                    raise RuntimeError("the results API answered an empty page")
                return len(page.records)

            return open_loop_row(
                "lab_read_test", f"GET results page (limit {page_size}) through LabApiConnector", read,
                rate=10, seconds=seconds, target_ms=1000, workers=8, extra={"page_size": page_size, "first_page_records": total},
                warmup=read,
            )


# The rows each system's function makes, with the plan's targets (ms, per s), for the row that says it failed.
ROW_TARGETS: dict[str, tuple[tuple[str, float, float], ...]] = {
    "razorpay": (("razorpay_create_order", 500, 100), ("razorpay_verify_payment", 300, 200)),
    "whatsapp": (("whatsapp_send_message", 1000, 20),), "microsoft365": (("microsoft365_upload", 2000, 10),),
    "google": (("google_calendar_event", 500, 50),), "sap": (("sap_sync_customer", 2000, 20),),
    "plant": (("plant_read_status", 200, 100),), "lab": (("lab_read_test", 1000, 10),),
}
ROWS: dict[str, Callable[[argparse.Namespace], list[Row]]] = {
    "razorpay": lambda a: razorpay_rows(a.seconds),
    "whatsapp": lambda a: [whatsapp_row(a.seconds)],
    "microsoft365": lambda a: [microsoft365_row(a.seconds)],
    "google": lambda a: [google_row(a.seconds)],
    "sap": lambda a: [sap_row(a.sap_creates, a.sap_updates)],
    "plant": lambda a: [plant_row(a.seconds)],
    "lab": lambda a: [lab_row(a.seconds)],
}


def print_table(rows: list[Row]) -> None:
    """The table for people; the JSON lines after it are for machines."""
    from rich.console import Console
    from rich.table import Table

    table = Table(title="The plan's performance table (p50/p95/p99 from the scheduled send)")
    for name in ("row", "p50", "p95", "p99", "target", "ops/s", "target/s", "meets"):
        table.add_column(name, justify="left" if name == "row" else "right")
    for r in rows:
        unit = f" {r.latency_unit}"
        table.add_row(r.row, f"{r.p50_ms:g}", f"{r.p95_ms:g}", f"{r.p99_ms:g}", f"< {r.target_ms:g}{unit}", f"{r.per_s:g}",
                      f"{r.target_per_s:g}", "[green]yes[/]" if r.meets else "[red]no[/]")
    Console(width=120).print(table)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=10.0, help="length of each open-loop run")
    parser.add_argument("--sap-creates", type=int, default=120, help="customers bench/sap_writeback.py creates")
    parser.add_argument("--sap-updates", type=int, default=60, help="of them it then changes")
    parser.add_argument("--only", action="append", choices=sorted(ROWS), help="run only these systems' rows (repeatable)")
    args = parser.parse_args(argv)

    tmp = Path(tempfile.mkdtemp(prefix="perf-table-"))
    os.environ.setdefault("DATABASE_URL", f"sqlite:///{tmp / 'hub.db'}")
    os.environ.setdefault("LOG_DIR", str(tmp / "logs"))
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    from hub.core.db import upgrade

    upgrade()
    rows: list[Row] = []
    for system in args.only or list(ROWS):
        started = time.process_time(), time.perf_counter()
        # The machine's load when the row started: the figures of a shared machine read against it.
        load_avg = round(os.getloadavg()[0], 2)
        first = len(rows)
        try:
            rows.extend(ROWS[system](args))
        except Exception as exc:  # noqa: BLE001 - one system that fails its run is a row that does not meet, not no table
            print(f"{system}: failed: {exc!r}", file=sys.stderr)
            rows.extend(Row(name, "failed", ms, per_s, 0, 0, 0, 0, 0, "failed", extra={"error": repr(exc)[:300]})
                        for name, ms, per_s in ROW_TARGETS[system])
        for r in rows[first:]:
            r.extra["load_avg_1m"] = load_avg
        print(f"{system}: {time.perf_counter() - started[1]:.1f} s wall, {time.process_time() - started[0]:.1f} s CPU of this process",
              file=sys.stderr)
    print_table(rows)
    for r in rows:
        print(json.dumps(asdict(r)))
    print(json.dumps({"rows": [asdict(r) for r in rows], "meets": all(r.meets for r in rows), "run_id": RUN_ID}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
