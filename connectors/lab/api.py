"""Optional: read lab results from a testing machine's (or its LIMS middleware's) HTTP results API.

`GET api/v1/results?after=<seq>&limit=<n>` answers `{"results": [...], "next_after": <seq>}` in arrival
order (the sandbox's API; middleware such as LIMS gateways offer the same shape of keyset paging).
Each page becomes an export of its own (`records_to_csv`), processed like a dropped file: checksum,
parse, map, validate, load, with the `after` cursor written in the same transaction as the page's rows.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from connectors.core.base import Connector, Stream
from connectors.core.client import IntegrationClient
from connectors.core.paging import PagePosition, query_of, with_query
from connectors.lab.exports import FIELDS

MAX_LIMIT = 1000


@dataclass(frozen=True)
class AfterSeqPaginator:
    """Keyset paging on a sequence number: the next page starts after the answer's `next_after`; a short page is the last."""

    def start(self, url: str) -> PagePosition:
        return PagePosition(url)

    def next_position(self, position: PagePosition, body: Any, records: list[dict[str, Any]]) -> PagePosition | None:
        limit = int(query_of(position.url).get("limit", "0") or 0)
        after = body.get("next_after") if isinstance(body, dict) else None
        if not records or len(records) < limit or not isinstance(after, int):
            return None
        return PagePosition(with_query(position.url, after=after))


RESULTS = Stream(
    name="lab_results",
    path="api/v1/results",
    primary_key="seq",
    cursor_field="seq",
    record_path=("results",),
    paginator=AfterSeqPaginator(),
)


class LabApiConnector(Connector):
    """Results since a sequence number, page by page."""

    integration = "lab"

    def __init__(self, client: IntegrationClient, *, page_size: int | None = None) -> None:
        super().__init__(client)
        self.page_size = min(MAX_LIMIT, page_size or client.config.page_size)

    def connect(self) -> None:
        self.client.get_json("api/v1/sessions", operation="connect")

    def first_url(self, stream: Stream, cursor: Mapping[str, Any] | None) -> str:
        return with_query(stream.path, after=int((cursor or {}).get("after", 0)), limit=self.page_size)


def records_to_csv(records: list[dict[str, Any]]) -> bytes:
    """An API page as a canonical export (the hub's own field names, ISO times, decimal points)."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(FIELDS)
    for record in records:
        writer.writerow(["" if record.get(f) is None else (record[f].isoformat() if isinstance(record[f], datetime) else record[f]) for f in FIELDS])
    return out.getvalue().encode()
