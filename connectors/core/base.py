"""The integration base every connector implements: connect, test_connection, sync, webhook hooks.

A system's endpoints are short typed declarations (`Stream`) on top of the shared core; code hooks
stay small and local to the system (SAP's CSRF dance, Graph upload sessions).
"""

from __future__ import annotations

import abc
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from connectors.core.client import IntegrationClient
from connectors.core.errors import IntegrationError, InvalidRequest, classify_exception
from connectors.core.paging import ODataV2Paginator, Page, PagePosition, Paginator


@dataclass(frozen=True)
class Stream:
    """A dataset a connector can read: where it lives, its key, its cursor and how it pages."""

    name: str
    path: str
    primary_key: str
    cursor_field: str | None = None
    record_path: tuple[str, ...] = ("d", "results")
    select: tuple[str, ...] = ()
    expand: tuple[str, ...] = ()
    order_by: tuple[str, ...] = ()
    paginator: Paginator = field(default_factory=ODataV2Paginator)
    # (field of the last page's body, cursor key): the source's own cursor for the next read, e.g.
    # ("nextSyncToken", "sync_token"); None when the cursor is a value of the records.
    end_cursor: tuple[str, str] | None = None


@dataclass(frozen=True)
class ConnectionCheck:
    ok: bool
    integration: str
    latency_ms: float
    detail: str
    error: IntegrationError | None = None


class Connector(abc.ABC):
    """Python form of the integration base; knows nothing of Prefect so it runs and tests without it."""

    integration: str

    def __init__(self, client: IntegrationClient) -> None:
        self.client = client

    def close(self) -> None:
        self.client.close()

    def __enter__(self) -> Connector:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @abc.abstractmethod
    def connect(self) -> None:
        """Prove the credentials and reachability; raises a classified error otherwise."""

    def test_connection(self) -> ConnectionCheck:
        started = time.perf_counter()
        try:
            self.connect()
        except Exception as exc:  # noqa: BLE001 - the check reports every failure, classified
            error = classify_exception(exc, integration=self.integration, operation="test_connection")
            return ConnectionCheck(False, self.integration, (time.perf_counter() - started) * 1000, str(error), error)
        return ConnectionCheck(True, self.integration, (time.perf_counter() - started) * 1000, "connected")

    @abc.abstractmethod
    def first_url(self, stream: Stream, cursor: Mapping[str, Any] | None) -> str:
        """The URL of the first page of an (incremental, when `cursor` is given) read of `stream`."""

    def start(self, stream: Stream, cursor: Mapping[str, Any] | None) -> PagePosition:
        return stream.paginator.start(self.first_url(stream, cursor))

    def fetch_page(self, stream: Stream, position: PagePosition) -> Page:
        body = self.client.get_json(position.url, operation=f"read_{stream.name}")
        records = body
        for key in stream.record_path:
            records = records.get(key) if isinstance(records, dict) else None
        if not isinstance(records, list):
            raise classify_exception(
                ValueError(f"page has no record list at {'/'.join(stream.record_path)}"),
                integration=self.integration,
                operation=f"read_{stream.name}",
            )
        following = stream.paginator.next_position(position, body, records)
        end_cursor = None
        if following is None and stream.end_cursor is not None and isinstance(body, dict) and body.get(stream.end_cursor[0]):
            end_cursor = {stream.end_cursor[1]: body[stream.end_cursor[0]]}
        return Page(position=position, records=records, next=following, end_cursor=end_cursor)

    def sync(
        self, stream: Stream, cursor: Mapping[str, Any] | None = None, *, start: PagePosition | None = None
    ) -> Iterator[Page]:
        """Every page of `stream` from `start` (a resumed unit) or from the cursor."""
        position: PagePosition | None = start or self.start(stream, cursor)
        while position is not None:
            page = self.fetch_page(stream, position)
            yield page
            position = page.next

    def handle_webhook(self, headers: Mapping[str, str], body: bytes) -> dict[str, Any]:
        """Verify and parse a pushed event; systems that push nothing refuse clearly."""
        raise InvalidRequest(f"{self.integration} does not push webhooks to the hub", integration=self.integration)
