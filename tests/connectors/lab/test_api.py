"""The results-API reader against the lab sandbox: keyset pages, cursor, canonical export of a page."""

from __future__ import annotations

import httpx
import pytest

from connectors.core.config import RetryPolicy
from connectors.core.errors import ServerError
from connectors.core.paging import PagePosition
from connectors.lab.api import RESULTS, AfterSeqPaginator, records_to_csv
from connectors.lab.exports import parse_export
from hub.runtime.connections import build_lab_api_connector
from sandbox.core import as_transport, running_server
from sandbox.lab import LabSandbox

NO_WAIT = RetryPolicy(max_retries=2, base_delay_ms=0, max_delay_ms=0, jitter_ratio=0)


def test_paginator_stops_on_a_short_page_and_follows_next_after() -> None:
    paginator = AfterSeqPaginator()
    start = paginator.start("api/v1/results?after=0&limit=2")
    nxt = paginator.next_position(start, {"next_after": 2}, [{"seq": 1}, {"seq": 2}])
    assert nxt == PagePosition("api/v1/results?after=2&limit=2")
    assert paginator.next_position(nxt, {"next_after": 3}, [{"seq": 3}]) is None
    assert paginator.next_position(nxt, {"next_after": 2}, []) is None


def test_reads_every_result_since_the_cursor_page_by_page() -> None:
    sim = LabSandbox(seed=5)
    sim.test_session(batch_ids=["B-1", "B-2"])  # 18 results
    with build_lab_api_connector(base_url="http://lab.sandbox", transport=as_transport(sim), page_size=7) as connector:
        pages = list(connector.sync(RESULTS, None))
        assert [len(p.records) for p in pages] == [7, 7, 4]
        later = list(connector.sync(RESULTS, {"after": 14}))
    assert [r["seq"] for r in later[0].records] == [15, 16, 17, 18]


def test_a_page_becomes_a_canonical_export_with_the_same_values() -> None:
    sim = LabSandbox(seed=6)
    session = sim.test_session(batch_ids=["B-9"])
    with build_lab_api_connector(base_url="http://lab.sandbox", transport=as_transport(sim)) as connector:
        (page,) = list(connector.sync(RESULTS, None))
    parsed = parse_export(records_to_csv(page.records), "api.csv")
    assert [r["specimen_id"] for r in parsed.records] == [r["specimen_id"] for r in session.records]
    assert parsed.records[0]["tested_at"] == session.records[0]["tested_at"].isoformat()
    assert parsed.bad_lines == []


def test_server_errors_are_retried_over_real_http() -> None:
    sim = LabSandbox(seed=8, faults={"error_5xx_next_n": 1})
    sim.test_session(batch_ids=["B-3"])
    with running_server(sim) as base_url, build_lab_api_connector(base_url=base_url, retry=NO_WAIT) as connector:
        (page,) = list(connector.sync(RESULTS, None))
    assert len(page.records) == 9


def test_exhausted_retries_raise_a_classified_error() -> None:
    sim = LabSandbox(seed=8, faults={"error_5xx_next_n": 5})
    with build_lab_api_connector(base_url="http://lab.sandbox", transport=as_transport(sim), retry=NO_WAIT) as connector, pytest.raises(ServerError):
        list(connector.sync(RESULTS, None))


def test_no_api_configured_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("LAB_API_URL", raising=False)
    with pytest.raises(ValueError, match="LAB_API_URL"):
        build_lab_api_connector(transport=httpx.MockTransport(lambda r: httpx.Response(200)))
