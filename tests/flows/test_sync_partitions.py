"""A full SAP customer sync split into key-range partitions run in worker processes (tasks/partitions.py), against the
SAP simulator over real HTTP (worker processes cannot share an in-process transport)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session

from hub.core.db import get_engine
from hub.core.models import IntegrationErrorRow
from sandbox.sap import SapSandbox
from tests.sap_http import cursor, run, served_sap, table_counts

PARTNERS = 3000

pytestmark = pytest.mark.usefixtures("prefect_harness")


@pytest.fixture
def sap_http(db: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[SapSandbox]:
    with served_sap(monkeypatch, partners=PARTNERS, seed=7, max_page_size=500) as sandbox:
        yield sandbox


def test_partitioned_full_sync_loads_what_one_process_loads(sap_http: SapSandbox) -> None:
    summary = run(page_size=250, partitions=2)
    assert summary["partitions"] == 2
    assert summary["extracted"] == PARTNERS and summary["distinct_read"] == PARTNERS and summary["source_count"] == PARTNERS
    assert summary["valid"] + summary["quarantined"] == PARTNERS and summary["quarantined"] > 0
    assert table_counts() == (summary["valid"], summary["quarantined"])
    partitioned_watermark = cursor()
    assert partitioned_watermark and summary["watermark"] == partitioned_watermark["last_change_date"]

    # One Data Docs report for the run, with the batches validated in both worker processes.
    report = Path(summary["report_path"])
    pages = list(report.parent.rglob("validations/**/*.html"))
    assert len(pages) >= summary["batches"] >= 2, (len(pages), summary["batches"])

    single = run(page_size=250, full_refresh=True)
    assert (single["valid"], single["quarantined"], single["unchanged"]) == (summary["valid"], summary["quarantined"], summary["valid"])
    assert cursor() == partitioned_watermark


def test_the_runs_retry_count_holds_the_retries_each_partition_made_in_its_own_process(sap_http: SapSandbox) -> None:
    # Every 3rd request of the second key range (its filter has a lower bound) answers 503 once; that partition's
    # connector retries it, in the partition's process. Never two in a row: each 503 is one retry.
    sap_http.faults.update({"error_5xx_every_n": 3, "only_where": "BusinessPartner ge '"})
    summary = run(page_size=250, partitions=2)
    fired = sap_http.faults.snapshot()["stats"]["fired"]["error_5xx"]
    sap_http.faults.clear()
    assert fired >= 2
    assert summary["retries"] == fired
    assert summary["extracted"] == PARTNERS and cursor() is not None


def test_a_failed_partition_is_its_own_unit_and_the_watermark_waits_for_its_rerun(sap_http: SapSandbox) -> None:
    from hub.ledger.retry_units import rerun

    # Every request of the second key range (its filter has a lower bound) is refused; the first range loads.
    sap_http.faults.update({"expire_tokens": True, "only_where": "BusinessPartner ge '"})
    with pytest.raises(Exception, match="1 of 2 partitions failed"):
        run(page_size=250, partitions=2)
    assert cursor() is None, "no watermark while a partition is missing"
    loaded_first, _ = table_counts()
    assert 0 < loaded_first < PARTNERS
    with Session(get_engine()) as session:
        rows = list(session.scalars(select(IntegrationErrorRow).where(IntegrationErrorRow.resolved_at.is_(None))))
    failed = [r for r in rows if (r.unit or {}).get("partition")]
    assert len(failed) == 1, [(r.id, r.error_type, r.unit) for r in rows]
    unit = failed[0].unit
    assert unit["partition"] == 2 and unit["partitions"] == 2
    assert "BusinessPartner ge '" in unit["position"]["url"] or "BusinessPartner%20ge" in unit["position"]["url"]
    assert unit["pending_cursor"]["last_change_date"]

    sap_http.faults.clear()
    outcome = rerun(failed[0].id, by="test", manual=True)
    assert outcome.status == "resolved", outcome
    loaded, quarantined = table_counts()
    assert loaded + quarantined == PARTNERS
    assert cursor() == unit["pending_cursor"], "the last partition's rerun writes the run's watermark"


def test_a_database_outage_during_a_partitioned_run_is_ridden_out_by_each_partitions_load_retries(
    sap_http: SapSandbox, db: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The database goes away (connections reset, new ones refused) when the second key range is first read, and
    comes back 4 s later: every partition's loads retry inside the retry window, nothing is lost or loaded twice,
    the watermark is written once every partition committed, and no failed unit is left."""
    import threading
    import time

    from tests.db_outage import database_outage

    # The suite's 2 s retry window (tests/conftest.py) is shorter than this outage: a deployment's default is 60 s.
    # The worker processes import the load task afresh, with this window, and inherit the outage's DATABASE_URL.
    monkeypatch.setenv("DATABASE_RETRY_WINDOW_S", "30")
    with database_outage(db, monkeypatch) as outage:
        dispatch = sap_http.dispatch
        went_down: list[float] = []

        def up_once_refused() -> None:
            # Down for 4 s at least, and until the database was asked for at least twice meanwhile (a partition's
            # load and its retry, or the metrics flusher): never longer than 20 s, within the retry window.
            before = outage.proxy.accepted if outage.proxy is not None else 0
            deadline = time.monotonic() + 20
            time.sleep(4)
            while outage.proxy is not None and outage.proxy.accepted - before < 2 and time.monotonic() < deadline:
                time.sleep(0.2)
            outage.up()

        def down_when_the_second_range_is_read(req: Any) -> Any:
            query = " ".join(v for _, v in req.query)
            if "A_BusinessPartner" in req.path and "BusinessPartner ge '" in query and not went_down:
                went_down.append(time.monotonic())
                outage.down("refuse")
                threading.Thread(target=up_once_refused, daemon=True).start()
            return dispatch(req)

        sap_http.dispatch = down_when_the_second_range_is_read  # type: ignore[method-assign]
        summary = run(page_size=250, partitions=2)
        refused_connections = outage.proxy.accepted if outage.proxy is not None else None
    assert went_down, "the second key range was never read"
    assert summary["partitions"] == 2 and summary["extracted"] == PARTNERS and summary["distinct_read"] == PARTNERS
    assert summary["valid"] + summary["quarantined"] == PARTNERS
    assert table_counts() == (summary["valid"], summary["quarantined"])
    assert cursor() is not None and summary["watermark"] == cursor()["last_change_date"]  # type: ignore[index]
    with Session(get_engine()) as session:
        still_open = list(session.scalars(select(IntegrationErrorRow).where(IntegrationErrorRow.resolved_at.is_(None))))
    # Open: only the run's validation report (its quarantined rows); no unit to rerun, no database error.
    assert [(r.error_code, r.unit) for r in still_open] == [("EXPECTATIONS_FAILED", None)]
    if refused_connections is not None:
        assert refused_connections > 2  # the database was asked for during the outage, and again after it


@pytest.fixture
def prefect_server(tmp_path: Path) -> Iterator[str]:
    """A real Prefect server: Dask workers report to an API address (docs/scaling.md)."""
    import os
    import socket
    import subprocess
    import sys
    import time

    import httpx

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {**os.environ, "PREFECT_HOME": str(tmp_path / "prefect"), "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
           "PREFECT_API_DATABASE_CONNECTION_URL": f"sqlite+aiosqlite:///{tmp_path / 'prefect.db'}"}
    env.pop("PREFECT_API_URL", None)
    proc = subprocess.Popen([sys.executable, "-m", "prefect", "server", "start", "--host", "127.0.0.1", "--port", str(port)],
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}/api"
    try:
        deadline = time.time() + 120
        while time.time() < deadline:
            try:
                if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.5)
        else:
            raise RuntimeError("the Prefect server did not start")
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=30)


@pytest.mark.deploy
def test_partitions_run_on_a_dask_cluster(sap_http: SapSandbox, prefect_server: str, monkeypatch: pytest.MonkeyPatch) -> None:
    from distributed import LocalCluster
    from prefect.settings import PREFECT_API_URL, temporary_settings

    monkeypatch.setenv("PREFECT_API_URL", prefect_server)  # the cluster's worker processes inherit it
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None) as cluster, \
            temporary_settings({PREFECT_API_URL: prefect_server}):
        summary = run(page_size=250, partitions=3, cluster=cluster.scheduler_address)
    assert summary["partitions"] == 3 and summary["extracted"] == PARTNERS and summary["distinct_read"] == PARTNERS
    assert table_counts() == (summary["valid"], summary["quarantined"])
    assert cursor() is not None

    # No address, a Prefect server: a local Dask cluster of one worker process per partition.
    with temporary_settings({PREFECT_API_URL: prefect_server}):
        again = run(page_size=250, partitions=2, full_refresh=True)
    assert again["partitions"] == 2 and again["unchanged"] == again["valid"] == summary["valid"]
