"""Generic extract task: a batch of pages from any connector stream, resumable from its position."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from prefect import task
from prefect.cache_policies import NO_CACHE

from connectors.core.base import Connector, Stream
from connectors.core.paging import PagePosition
from tasks.retry import retry_transient_only


@dataclass
class ExtractedBatch:
    """Records of up to `max_pages` pages, where the batch started and where the next one starts."""

    start: PagePosition
    records: list[dict[str, Any]] = field(default_factory=list)
    pages: int = 0
    next: PagePosition | None = None
    end_cursor: dict[str, Any] | None = None  # the source's cursor for the next read, with a read's last page


def read_batch(connector: Connector, stream: Stream, start: PagePosition, max_pages: int) -> ExtractedBatch:
    batch = ExtractedBatch(start=start)
    position: PagePosition | None = start
    while position is not None and batch.pages < max_pages:
        page = connector.fetch_page(stream, position)
        batch.records.extend(page.records)
        batch.pages += 1
        position = page.next
        batch.end_cursor = page.end_cursor
    batch.next = position
    return batch


def drop_exact_duplicates(records: list[dict[str, Any]], key: str) -> tuple[list[dict[str, Any]], int]:
    """The batch without records served twice to the letter (first copy kept), and how many were dropped.

    A source that serves the same record twice (a page repeated by a retried request, a join fan-out)
    must not make the suite's uniqueness rule refuse both copies. Records that share a key but differ
    are kept: which one is right is for a person to decide, so validation refuses both.
    """
    seen: dict[Any, dict[str, Any]] = {}
    repeated: set[Any] = set()
    for record in records:
        k = record.get(key)
        if k in seen:
            repeated.add(k)
        else:
            seen[k] = record
    if not repeated:
        return records, 0
    kept: list[dict[str, Any]] = []
    copies: dict[Any, list[dict[str, Any]]] = {}
    for record in records:
        k = record.get(key)
        if k in repeated:
            if any(record == other for other in copies.setdefault(k, [])):
                continue
            copies[k].append(record)
        kept.append(record)
    return kept, len(records) - len(kept)


@task(
    name="extract_batch",
    cache_policy=NO_CACHE,
    persist_result=False,
    retries=1,
    retry_delay_seconds=[2.0],
    retry_condition_fn=retry_transient_only,
    task_run_name="extract-{stream.name}",
)
def extract_batch(connector: Connector, stream: Stream, start: PagePosition, max_pages: int) -> ExtractedBatch:
    """Fetch up to `max_pages` pages; transient HTTP failures were already retried inside the connector."""
    return read_batch(connector, stream, start, max_pages)
