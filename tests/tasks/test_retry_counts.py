"""An error row's retry_count is what really retried in the run: the connector's HTTP retries plus Prefect's task
retries (tasks/retry.py counts each one `retry_transient_only` lets happen), and nothing for a failure never retried."""

from __future__ import annotations

import httpx
import pytest
from prefect import flow, task
from prefect.cache_policies import NO_CACHE
from sqlalchemy import select

from connectors.core.client import IntegrationClient
from connectors.core.config import IntegrationConfig, RetryPolicy
from connectors.core.errors import InvalidRequest, ServerError
from hub.core.db import session_scope
from hub.core.models import IntegrationErrorRow
from tasks.engine import DatasetRun
from tasks.retry import retry_transient_only

HTTP_RETRIES = 2  # the connector's policy: each task attempt sends a request up to 1 + 2 times
TASK_RETRIES = 2  # Prefect's outer net


def _client(integration: str, status: int) -> IntegrationClient:
    config = IntegrationConfig(
        name=integration, base_url="http://probe.test/",
        retry=RetryPolicy(max_retries=HTTP_RETRIES, base_delay_ms=0, max_delay_ms=0, jitter_ratio=0.0),
    )
    answer = httpx.MockTransport(lambda request: httpx.Response(status, json={"error": {"message": "no"}}))
    return IntegrationClient(config, transport=answer, sleep=lambda _s: None)


@task(name="read_probe_page", cache_policy=NO_CACHE, persist_result=False, retries=TASK_RETRIES, retry_delay_seconds=0,
      retry_condition_fn=retry_transient_only)
def read_probe_page(integration: str, status: int) -> None:
    with _client(integration, status) as client:
        client.get_json("items", operation="read_items")


@flow(name="probe-retry-counts")
def probe(integration: str, status: int) -> None:
    run = DatasetRun(integration, "items", "probe-retry-counts")
    try:
        read_probe_page(integration, status)
    except Exception as exc:  # noqa: BLE001 - recorded like every flow of the hub records a failed unit
        run.fail(exc, operation="read_items")


def _row(integration: str) -> IntegrationErrorRow:
    with session_scope() as session:
        row = session.scalars(select(IntegrationErrorRow).where(IntegrationErrorRow.integration == integration)).one()
        session.expunge(row)
        return row


def test_retry_count_adds_http_retries_and_prefect_task_retries(db: str, prefect_harness: None) -> None:
    with pytest.raises(ServerError):
        probe("probe_transient", 503)
    row = _row("probe_transient")
    attempts = 1 + TASK_RETRIES
    assert row.retry_count == attempts * HTTP_RETRIES + TASK_RETRIES  # 6 HTTP retries over 3 task runs, 2 task retries
    assert row.error_type == "SERVER_ERROR"
    assert "in read_probe_page" in (row.stack_trace or "") and "ServerError" in (row.stack_trace or "")


def test_a_failure_that_is_never_retried_counts_zero(db: str, prefect_harness: None) -> None:
    with pytest.raises(InvalidRequest):
        probe("probe_invalid", 400)
    row = _row("probe_invalid")
    assert row.retry_count == 0
    assert row.error_type == "INVALID_REQUEST"
