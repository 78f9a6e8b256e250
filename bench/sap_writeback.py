"""Benchmark: ERP customers pushed to SAP over real HTTP under SAP's rate budget, against a bare-POST floor.

Run: DATABASE_URL=postgresql+psycopg://postgres@127.0.0.1:5432/test .venv/bin/python bench/sap_writeback.py
(without DATABASE_URL: a SQLite file in a temporary directory). Under a minute with the defaults. The database is a
scratch one: the run empties `customers` and `customer_outbox` first, as bench/sap_sync.py empties `customers`.

1. The SAP sandbox is served over real HTTP by a separate process (as SAP would be).
2. The floor, in the same run: bare creates (CSRF fetch once, then one POST deep insert each, plain httpx, no
   rate budget, no database), their latency and rate.
3. The real flow (`push_sap_customers`, under a temporary Prefect server started and warmed up first): `--creates`
   customers queued in the outbox and pushed, then `--updates` of them changed (name and e-mail: a partner PATCH
   with If-Match and an e-mail PATCH, one change set) and pushed, `batch_size` customers per `$batch`. Every SAP
   HTTP request (a lookup GET, a `$batch`) takes a token of the `sap` rate budget (`rate_budget_per_s` in
   config/integrations.toml, 20/s), as in production.

A push's latency runs from its row's start to its settling (its batch's round trip, rate-budget waits included);
`pushes_per_s` is customers pushed per second of the runs' wall time (page lookups and Prefect tasks included).
The last line printed is one JSON object with the figures; `meets` is p95 <= 2000 ms and >= 20 pushes/s.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

TARGET_P95_MS = 2000
TARGET_PER_S = 20
SERVICE = "/sap/opu/odata/sap/API_BUSINESS_PARTNER/"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_sandbox() -> tuple[subprocess.Popen[bytes], str]:
    import httpx

    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "hub.cli.main", "sandbox", "sap", "--port", str(port), "--partners", "20"],
        cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    base = f"http://127.0.0.1:{port}"
    deadline = time.time() + 60
    while time.time() < deadline:
        try:
            if httpx.get(base + SERVICE + "$metadata", auth=("DRYMIX_INT", "sandbox-secret"), timeout=2).status_code == 200:
                return proc, base + SERVICE
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    proc.kill()
    raise SystemExit("the SAP sandbox did not start")


def percentile(values: list[float], pct: float) -> float:
    if not values:
        return 0.0
    ordered = sorted(values)
    rank = max(0, min(len(ordered) - 1, round(pct / 100 * len(ordered) + 0.5) - 1))
    return round(ordered[rank], 1)


def customer(n: int) -> dict[str, Any]:
    return {
        "category": "organization", "name": f"Bench Traders {n}", "search_term": f"BENCH{n}", "email": f"orders{n}@bench.in",
        "phone": "+912240001234", "mobile": "+919820012345", "street": "MG Road", "house_number": str(n % 500 + 1), "city": "Pune",
        "postal_code": "411001", "region": "13", "country": "IN", "language": "EN",
        "sales_areas": [{"sales_org": "1710", "distribution_channel": "10", "division": "00", "currency": "INR"}],
    }


def bare_posts(service_url: str, count: int) -> dict[str, Any]:
    """The floor: one CSRF fetch, then `count` deep-insert POSTs, sequential, no budget, no database."""
    import httpx

    from connectors.sap.partners_write import create_payload

    latencies: list[float] = []
    with httpx.Client(base_url=service_url, auth=("DRYMIX_INT", "sandbox-secret"), headers={"Accept": "application/json"}) as http:
        token = http.head("", headers={"X-CSRF-Token": "Fetch"}).headers["x-csrf-token"]
        started = time.perf_counter()
        for n in range(count):
            t0 = time.perf_counter()
            response = http.post("A_BusinessPartner", json=create_payload(f"BASE-{n:06d}", customer(n)), headers={"X-CSRF-Token": token})
            response.raise_for_status()
            latencies.append((time.perf_counter() - t0) * 1000)
        wall = time.perf_counter() - started
    return {"baseline_post_p50_ms": percentile(latencies, 50), "baseline_post_p95_ms": percentile(latencies, 95),
            "baseline_posts_per_s": round(count / wall, 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--creates", type=int, default=120, help="customers created")
    parser.add_argument("--updates", type=int, default=60, help="of them changed afterwards (name and e-mail)")
    parser.add_argument("--baseline", type=int, default=100, help="bare POSTs of the floor")
    args = parser.parse_args()

    tmp = Path(tempfile.mkdtemp(prefix="drymix-bench-writeback-"))
    os.environ.setdefault("DATABASE_URL", f"sqlite:///{tmp / 'hub.db'}")
    os.environ.setdefault("SAP_USERNAME", "DRYMIX_INT")
    os.environ.setdefault("SAP_PASSWORD", "sandbox-secret")
    os.environ["PREFECT_HOME"] = str(tmp / "prefect")
    os.environ["PREFECT_SERVER_ANALYTICS_ENABLED"] = "false"
    os.environ["LOG_DIR"] = str(tmp / "logs")
    os.environ["ERROR_SPOOL_DIR"] = str(tmp / "error_spool")
    proc, service_url = start_sandbox()
    os.environ["SAP_BASE_URL"] = service_url
    try:
        from sqlalchemy import delete

        from hub.core.db import get_engine, upgrade
        from hub.core.models import Customer, CustomerOutbox
        from hub.core.settings import integration_config
        from hub.systems.sap_push import enqueue_customer_change

        upgrade()
        with get_engine().begin() as conn:
            # A scratch database, as bench/sap_sync.py's: `customers` rows left by another SAP (the sync bench's
            # 100k partners share this sandbox's numbering) would be the ERP's "last seen" version of the new
            # partners, and every update would rightly be a conflict.
            conn.execute(delete(CustomerOutbox))
            conn.execute(delete(Customer))
        floor = bare_posts(service_url, args.baseline)

        from prefect.testing.utilities import prefect_test_harness

        import hub.runtime.prefect_runtime  # noqa: F401 - Prefect environment defaults
        from flows.push_sap_customers import push_sap_customers

        stamp = int(time.time()) % 100_000
        refs = [f"BENCH-{stamp:05d}-{n:05d}" for n in range(args.creates)]
        with prefect_test_harness(server_startup_timeout=120):
            push_sap_customers()  # warm-up: the temporary server and the flow's imports, nothing queued
            with get_engine().begin() as conn:
                for n, ref in enumerate(refs):
                    enqueue_customer_change(conn, ref, customer(n), operation="create")
            started = time.perf_counter()
            created = push_sap_customers()
            create_s = time.perf_counter() - started
            with get_engine().begin() as conn:
                for n, ref in enumerate(refs[: args.updates]):
                    enqueue_customer_change(conn, ref, {"name": f"Bench Traders {n} Pvt Ltd", "email": f"billing{n}@bench.in"})
            started = time.perf_counter()
            updated = push_sap_customers()
            update_s = time.perf_counter() - started
    finally:
        proc.terminate()
        proc.wait(timeout=10)

    latencies = [*created["latencies_ms"], *updated["latencies_ms"]]
    pushed = created["upserted"] + updated["upserted"]
    failures = {k: created[k] + updated[k] for k in ("failed", "refused", "conflicts", "retry_later")}
    per_s = round(pushed / (create_s + update_s), 1) if pushed else 0.0
    p95 = percentile(latencies, 95)
    result = {
        "customers_created": created["created"] + created["adopted"],
        "customers_updated": updated["updated"],
        **failures,
        "push_p50_ms": percentile(latencies, 50),
        "push_p95_ms": p95,
        "push_p99_ms": percentile(latencies, 99),
        "push_mean_ms": round(statistics.fmean(latencies), 1) if latencies else 0.0,
        "pushes_per_s": per_s,
        "creates_per_s": round((created["created"] + created["adopted"]) / create_s, 1),
        "updates_per_s": round(updated["updated"] / update_s, 1) if args.updates else 0.0,
        "rate_budget_per_s": integration_config("sap").rate_budget_per_s,
        "target_p95_ms": TARGET_P95_MS,
        "target_per_s": TARGET_PER_S,
        "meets": bool(latencies) and p95 <= TARGET_P95_MS and per_s >= TARGET_PER_S and not any(failures.values()),
        **floor,
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
