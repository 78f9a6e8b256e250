"""The run's extract process (tasks/extract_process.py): a SAP customer sync against the simulator over real HTTP
(an in-process transport is not read from another process), compared with the thread that reads otherwise."""

from __future__ import annotations

import base64
import logging
import os
from collections.abc import Iterator
from typing import Any

import httpx
import pandas as pd
import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session

from connectors.core.base import Stream
from connectors.core.client import set_shared_rate_limiter, use_transport
from connectors.core.config import IntegrationConfig
from connectors.core.errors import IntegrationError, SyncFailed
from connectors.core.metrics import METRICS
from connectors.core.paging import Page, PagePosition
from hub.core.db import get_engine
from hub.core.models import Customer, IntegrationErrorRow, QuarantinedRecord
from hub.core.settings import integration_config, reset_settings_cache
from hub.ledger.retry_units import SAP_CUSTOMERS_BATCH
from hub.runtime.connections import build_sap_connector
from sandbox.core import as_transport, running_server
from sandbox.sales_orders import SalesOrderSandbox
from sandbox.sap import SapSandbox
from tasks import extract_process
from tasks.extract import read_batch
from tasks.extract_process import ExtractProcess
from tests.sap_http import cursor, run, served_sap, table_counts

PARTNERS = 1200


@pytest.fixture
def sap_http(db: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[SapSandbox]:
    with served_sap(monkeypatch, partners=PARTNERS, seed=5, max_page_size=200) as sandbox:
        yield sandbox


@pytest.fixture
def reads(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The pid of the process each batch was read in, as `ExtractProcess.read` hands it back."""
    pids: list[int] = []
    read = ExtractProcess.read

    def counted(self: ExtractProcess, start: PagePosition, max_pages: int) -> Any:
        batch = read(self, start, max_pages)
        pids.append(self.pid)
        return batch

    monkeypatch.setattr(ExtractProcess, "read", counted)
    return pids


def extract_process_off(monkeypatch: pytest.MonkeyPatch) -> None:
    import tasks.engine

    monkeypatch.setattr(tasks.engine, "integration_config",
                        lambda name: integration_config(name).model_copy(update={"extract_process": False}))


@pytest.mark.usefixtures("prefect_harness")
def test_a_sync_reads_in_its_extract_process_and_loads_what_the_thread_loads(
    sap_http: SapSandbox, reads: list[int], monkeypatch: pytest.MonkeyPatch
) -> None:
    assert integration_config("sap").extract_process, "config/integrations.toml turns it on for SAP"
    calls_before = METRICS.total("sap", "calls")
    summary = run(page_size=200, batch_pages=2, full_refresh=True)
    assert summary["extracted"] == PARTNERS and summary["valid"] + summary["quarantined"] == PARTNERS
    assert summary["quarantined"] > 0 and summary["batches"] >= 3
    assert len(reads) == summary["batches"] and set(reads) != {os.getpid()} and len(set(reads)) == 1
    assert table_counts() == (summary["valid"], summary["quarantined"])
    watermark = cursor()
    assert watermark and summary["watermark"] == watermark["last_change_date"]
    # The child's calls reach this process's metrics (flushed to call_metrics from here): every page and the $count.
    assert METRICS.total("sap", "calls") - calls_before >= summary["pages"] + 1

    # The thread reads the same partners into the same rows: every one is unchanged, the quarantine the same.
    extract_process_off(monkeypatch)
    reads.clear()
    again = run(page_size=200, batch_pages=2, full_refresh=True)
    assert reads == []
    assert (again["valid"], again["quarantined"], again["unchanged"]) == (summary["valid"], summary["quarantined"], summary["valid"])
    assert table_counts() == (summary["valid"], summary["quarantined"]) and cursor() == watermark


@pytest.mark.usefixtures("prefect_harness")
def test_the_extract_processs_retries_and_log_records_reach_the_run(
    sap_http: SapSandbox, reads: list[int], caplog: pytest.LogCaptureFixture
) -> None:
    sap_http.faults.update({"error_5xx_next_n": 1, "only_where": "BusinessPartner gt '"})  # the second page, once
    with caplog.at_level(logging.WARNING, logger="connectors"):
        summary = run(page_size=200, batch_pages=2, full_refresh=True)
    assert sap_http.faults.snapshot()["stats"]["fired"]["error_5xx"] == 1
    assert reads and summary["retries"] == 1 and summary["extracted"] == PARTNERS
    retried = [r for r in caplog.records if r.name == "connectors.core.retry" and "retry 1/" in r.getMessage()]
    assert len(retried) == 1 and "503" in retried[0].getMessage()


@pytest.mark.usefixtures("prefect_harness")
def test_a_failure_in_the_extract_process_is_the_runs_failed_unit_and_its_rerun_completes(
    sap_http: SapSandbox, reads: list[int]
) -> None:
    from hub.ledger.retry_units import rerun

    # From the second page on (its keyset filter), SAP refuses the credentials: the first batch (one page) loads.
    sap_http.faults.update({"expire_tokens": True, "only_where": "BusinessPartner gt '"})
    with pytest.raises(Exception, match="AUTHENTICATION_FAILED"):
        run(page_size=200, batch_pages=1, full_refresh=True)
    assert cursor() is None
    loaded, quarantined = table_counts()
    assert 0 < loaded + quarantined < PARTNERS
    with Session(get_engine()) as session:
        rows = list(session.scalars(select(IntegrationErrorRow).where(IntegrationErrorRow.resolved_at.is_(None))))
    assert len(rows) == 1 and rows[0].error_type == "AUTHENTICATION_FAILED", [(r.error_type, r.error_message) for r in rows]
    assert rows[0].unit["kind"] == SAP_CUSTOMERS_BATCH and rows[0].unit["batch"] >= 2

    sap_http.faults.clear()
    reads.clear()
    outcome = rerun(rows[0].id, by="test", manual=True)
    assert outcome.status == "resolved", outcome
    assert reads, "the rerun reads in an extract process of its own"
    assert sum(table_counts()) == PARTNERS and cursor() is not None


@pytest.mark.usefixtures("prefect_harness")
def test_sales_orders_several_rows_a_record_come_back_from_the_process_as_the_thread_maps_them(
    db: str, reads: list[int], monkeypatch: pytest.MonkeyPatch
) -> None:
    from flows.sync_sap_sales_orders import sync_sap_sales_orders

    sandbox = SalesOrderSandbox(orders=300, seed=9, max_page_size=50, partners=500)
    with running_server(sandbox) as base_url:
        monkeypatch.setenv("SAP_BASE_URL", base_url.rstrip("/") + "/sap/opu/odata/sap/API_BUSINESS_PARTNER/")
        reset_settings_cache()
        try:
            summary = sync_sap_sales_orders(full_refresh=True, page_size=50, batch_pages=2)
            assert reads and len(reads) == summary["batches"]
            assert summary["extracted"] == 300 and summary["valid"] + summary["quarantined"] == 300
            assert summary["quarantined"] > 0 and summary["items_written"] > 300
            extract_process_off(monkeypatch)
            reads.clear()
            again = sync_sap_sales_orders(full_refresh=True, page_size=50, batch_pages=2)
        finally:
            reset_settings_cache()
    assert reads == []
    assert (again["valid"], again["quarantined"], again["unchanged"]) == (summary["valid"], summary["quarantined"], summary["valid"])


@pytest.mark.usefixtures("prefect_harness")
def test_partners_changed_while_the_extract_process_reads_are_all_loaded_exactly_once(
    sap_http: SapSandbox, reads: list[int]
) -> None:
    """The "data changes while it reads" drill (tests/flows/test_sap_sync_drills.py, in-process, so the thread)
    over real HTTP, read by the extract process: SAP changes 150 partners before answering pages 2 and 4."""
    changed: list[str] = []
    pages = 0
    dispatch = sap_http.dispatch

    def changing(req: Any) -> Any:
        nonlocal pages
        if "A_BusinessPartner" in req.path and "/$count" not in req.path:
            pages += 1
            if pages in (2, 4):
                changed.extend(sap_http.mutate(150, rng_seed=pages))
        return dispatch(req)

    sap_http.dispatch = changing  # type: ignore[method-assign]
    summary = run(page_size=200, batch_pages=2, full_refresh=True)
    assert reads and set(reads) != {os.getpid()}
    assert len(changed) == 300
    assert summary["source_count"] == PARTNERS == summary["distinct_read"] == summary["extracted"]
    with get_engine().connect() as conn:
        loaded = set(conn.execute(select(Customer.customer_id)).scalars())
        quarantined = list(conn.execute(select(QuarantinedRecord.record_key)
                                        .where(QuarantinedRecord.status == "quarantined")).scalars())
    assert len(quarantined) == len(set(quarantined)) and not loaded & set(quarantined)
    assert loaded | set(quarantined) == set(sap_http.partner_ids())  # lost: 0, duplicated: 0
    assert cursor() is not None and summary["watermark"] == cursor()["last_change_date"]  # type: ignore[index]


# --- the process itself, without a flow ---------------------------------------------------------------------


class _Pages:
    """A connector over three pages of two records; `exit_on` ends the reading process (as an OOM kill would)."""

    def __init__(self, exit_on: int | None = None) -> None:
        self.exit_on = exit_on
        self.forked = 0

    def after_fork(self) -> None:
        self.forked += 1

    def fetch_page(self, stream: Stream, position: PagePosition) -> Page:
        n = int(position.url)
        if n == self.exit_on:
            os._exit(9)
        records = [{"id": f"{n}-{i}", "forked": self.forked} for i in range(2)]
        return Page(position=position, records=records, next=PagePosition(url=str(n + 1)) if n < 3 else None)


def _frame(records: list[dict[str, Any]]) -> pd.DataFrame:
    return pd.DataFrame({"id": [r["id"] for r in records], "forked": [r["forked"] for r in records]})


STREAM = Stream(name="things", path="things", primary_key="id")


def test_a_batch_read_in_the_process_is_the_batch_the_thread_reads() -> None:
    pages = _Pages()
    with ExtractProcess(pages, STREAM, _frame, None) as process:  # type: ignore[arg-type]
        first = process.read(PagePosition(url="1"), 2)
        rest = process.read(first.next, 2)  # type: ignore[arg-type]
        pid = process.pid
    here = read_batch(pages, STREAM, PagePosition(url="1"), 2, _frame)  # type: ignore[arg-type]
    assert pid != os.getpid()
    assert first.frame is not None and first.frame["id"].tolist() == here.frame["id"].tolist() == ["1-0", "1-1", "2-0", "2-1"]  # type: ignore[union-attr]
    assert first.frame["forked"].tolist() == [1] * 4 and pages.forked == 0, "the child read with its own connections"
    assert first.keys == here.keys and first.source_record(2) == {"id": "2-0", "forked": 1}  # the source bytes came too
    assert rest.read == 2 and rest.next is None and rest.frame["id"].tolist() == ["3-0", "3-1"]  # type: ignore[union-attr]


def test_a_process_that_ends_mid_read_fails_the_batch_with_a_clear_error() -> None:
    with ExtractProcess(_Pages(exit_on=2), STREAM, _frame, None) as process:  # type: ignore[arg-type]
        with pytest.raises(SyncFailed, match="extract process") as failed:
            process.read(PagePosition(url="1"), 2)
    assert failed.value.code == "EXTRACT_PROCESS_LOST"


def test_the_child_hands_the_gil_over_often_and_the_runs_process_keeps_its_own_switch_interval() -> None:
    """The child's fetching thread waits for the GIL after every read while its other thread maps: the child switches
    threads every CHILD_SWITCH_INTERVAL_S instead of CPython's 5 ms; the run's process is left as it was."""
    import sys

    class Switching(_Pages):
        def fetch_page(self, stream: Stream, position: PagePosition) -> Page:
            page = super().fetch_page(stream, position)
            for record in page.records:
                record["forked"] = sys.getswitchinterval()
            return page

    before = sys.getswitchinterval()
    with ExtractProcess(Switching(), STREAM, _frame, None) as process:  # type: ignore[arg-type]
        batch = process.read(PagePosition(url="1"), 3)
    assert batch.frame is not None and len(batch.frame) == 6
    assert batch.frame["forked"].tolist() == pytest.approx([extract_process.CHILD_SWITCH_INTERVAL_S] * 6, rel=1e-3)
    assert extract_process.CHILD_SWITCH_INTERVAL_S < before
    assert sys.getswitchinterval() == before


_KILLED_RUN = """
import os, signal, sys, time
sys.path.insert(0, sys.argv[1])
import pandas as pd
from connectors.core.base import Stream
from connectors.core.paging import Page, PagePosition
from tasks.extract_process import ExtractProcess

class Pages:
    def after_fork(self): pass
    def fetch_page(self, stream, position):
        return Page(position=position, records=[{"id": position.url}], next=PagePosition(url=position.url + "1"))

process = ExtractProcess(Pages(), Stream(name="things", path="things", primary_key="id"),
                         lambda records: pd.DataFrame({"id": [r["id"] for r in records]}), None)
process.read(PagePosition(url="1"), 2)
print(process.pid, flush=True)
os.kill(os.getpid(), signal.SIGKILL)  # as a cancelled flow run's process, or the OOM killer
"""


def test_a_run_killed_mid_read_leaves_no_extract_process_behind() -> None:
    """The run's process dies without closing its extract process (SIGKILL): the child goes with it, instead of
    waiting for its next batch for ever with a copy of the run's memory and connections."""
    import subprocess
    import sys
    import time

    from hub.core.settings import ROOT

    killed = subprocess.run([sys.executable, "-c", _KILLED_RUN, str(ROOT)], capture_output=True, text=True, timeout=120, check=False)
    assert killed.returncode == -9, killed.stderr[-2000:]
    child = int(killed.stdout.split()[0])
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            os.kill(child, 0)
        except ProcessLookupError:
            return
        time.sleep(0.1)
    os.kill(child, 9)
    raise AssertionError(f"the extract process {child} outlived the run's process")


def test_only_a_mapped_read_over_the_network_with_the_setting_on_gets_a_process(db: str) -> None:
    config = IntegrationConfig(name="sap", base_url="http://127.0.0.1:1/sap/")
    over_network = build_sap_connector(config=config)
    in_process = build_sap_connector(config=config, transport=as_transport(SapSandbox(partners=1)))
    with use_transport("sap", httpx.MockTransport(lambda request: httpx.Response(200))):
        overridden = build_sap_connector(config=config)
    try:
        assert extract_process.wanted(True, over_network, _frame)
        assert not extract_process.wanted(False, over_network, _frame)
        assert not extract_process.wanted(True, over_network, None)
        assert not extract_process.wanted(True, in_process, _frame)
        assert not extract_process.wanted(True, overridden, _frame)
    finally:
        for connector in (over_network, in_process, overridden):
            connector.close()


class _Slots:
    """A shared budget installed in the run's process, as hub/runtime/rate_limits.py installs Prefect's: it records
    each slot taken, from which process and thread, and may refuse."""

    def __init__(self, refuse: Exception | None = None) -> None:
        self.taken: list[tuple[str, int, str]] = []
        self.refuse = refuse

    def __call__(self, integration: str) -> None:
        import threading

        if self.refuse is not None:
            raise self.refuse
        self.taken.append((integration, os.getpid(), threading.current_thread().name))


@pytest.mark.usefixtures("prefect_harness")
def test_the_childs_calls_take_the_workers_shared_budget_through_the_runs_process(
    sap_http: SapSandbox, reads: list[int]
) -> None:
    """Under a deployed stack every SAP call takes a slot of the Prefect global rate limit `rate:sap`, which needs
    the Prefect client's threads of the run's process: the child's calls are granted there, one slot each."""
    slots = _Slots()
    previous = set_shared_rate_limiter(slots)
    try:
        summary = run(page_size=200, batch_pages=2, full_refresh=True)
    finally:
        set_shared_rate_limiter(previous)
    assert reads and set(reads) != {os.getpid()}, "read in the extract process, not the thread"
    assert summary["extracted"] == PARTNERS and sum(table_counts()) == PARTNERS
    assert {integration for integration, _, _ in slots.taken} == {"sap"}
    assert {pid for _, pid, _ in slots.taken} == {os.getpid()}
    granted_for_the_child = [name for _, _, name in slots.taken if name.startswith("extract-slots-")]
    assert len(granted_for_the_child) >= summary["pages"], "every page the child fetched took a slot"


def test_a_slot_the_runs_process_cannot_take_fails_the_childs_call_classified() -> None:
    from connectors.core.client import RateBudget

    class Budgeted(_Pages):
        budget = RateBudget(1000.0, name="things")

        def fetch_page(self, stream: Stream, position: PagePosition) -> Page:
            self.budget.acquire()
            return super().fetch_page(stream, position)

    granted = _Slots()
    previous = set_shared_rate_limiter(granted)
    try:
        with ExtractProcess(Budgeted(), STREAM, _frame, None) as process:  # type: ignore[arg-type]
            batch = process.read(PagePosition(url="1"), 3)
        assert batch.read == 6 and [name for name, _, _ in granted.taken] == ["things"] * 3
        set_shared_rate_limiter(_Slots(refuse=httpx.ConnectError("the Prefect API is unreachable")))
        with ExtractProcess(Budgeted(), STREAM, _frame, None) as process:  # type: ignore[arg-type]
            with pytest.raises(Exception, match="unreachable") as refused:
                process.read(PagePosition(url="1"), 3)
    finally:
        set_shared_rate_limiter(previous)
    assert isinstance(refused.value, IntegrationError), "the error comes back classified"


def test_a_batch_the_run_stops_taking_midway_leaves_no_process_behind(monkeypatch: pytest.MonkeyPatch) -> None:
    """The run's side fails while the child is blocked sending a page nobody reads (pages larger than the pipe):
    closing the process kills it instead of waiting for it."""
    from tasks.extract import ExtractedBatch

    class Big(_Pages):
        def fetch_page(self, stream: Stream, position: PagePosition) -> Page:
            page = super().fetch_page(stream, position)
            for record in page.records:
                record["padding"] = base64.b64encode(os.urandom(200_000)).decode()  # packed, it stays ~270 KB
            return page

    add_page = ExtractedBatch.add_page

    def fails_on_the_second(self: ExtractedBatch, page: Any, record_column: str | None) -> pd.DataFrame:
        if self.pages == 1:
            raise RuntimeError("the run's side failed")
        return add_page(self, page, record_column)

    monkeypatch.setattr(ExtractedBatch, "add_page", fails_on_the_second)
    process = ExtractProcess(Big(), STREAM, _frame, None)  # type: ignore[arg-type]
    with pytest.raises(RuntimeError, match="the run's side failed"):
        process.read(PagePosition(url="1"), 3)
    process.close()  # would wait for ever for a child blocked in send
    with pytest.raises(ProcessLookupError):
        os.kill(process.pid, 0)
