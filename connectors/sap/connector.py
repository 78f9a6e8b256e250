"""SAP S/4HANA API_BUSINESS_PARTNER connector (OData V2): declarations plus SAP's own hooks (CSRF)."""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from datetime import date, timedelta
from typing import Any
from urllib.parse import quote

import httpx

from connectors.core.base import Connector, Stream
from connectors.core.client import IntegrationClient
from connectors.core.errors import AuthenticationFailed, IntegrationError, classify_exception
from connectors.core.paging import ODataKeysetPaginator, PagePosition, odata_string, query_of, with_query
from connectors.sap.batch import BatchItem, ItemResult, build_batch, has_create, parse_batch
from connectors.sap.odata import datetime_literal

log = logging.getLogger(__name__)

# Business partners (A_BusinessPartner), keyset-paged on the key. What a read selects and expands is the
# dataset's choice (the customers mapping's SOURCE_FIELDS, hub/systems/sap.py): `dataclasses.replace` it in.
BUSINESS_PARTNERS = Stream(
    name="customers",
    path="A_BusinessPartner",
    primary_key="BusinessPartner",
    cursor_field="LastChangeDate",
    record_path=("d", "results"),
    # Keyset paging on the key (connectors/core/paging.py says why offsets over changing data skip rows).
    order_by=("BusinessPartner asc",),
    paginator=ODataKeysetPaginator("BusinessPartner"),
)


class SapConnector(Connector):
    """OData V2 client for API_BUSINESS_PARTNER: paged reads, incremental filters, CSRF-protected writes."""

    integration = "sap"

    def __init__(self, client: IntegrationClient, *, page_size: int | None = None, overlap_days: int | None = None) -> None:
        super().__init__(client)
        self.page_size = page_size or client.config.page_size
        self.overlap_days = client.config.overlap_days if overlap_days is None else overlap_days
        self._csrf_token: str | None = None

    # -- reads -------------------------------------------------------------------------------
    def connect(self) -> None:
        """Read one partner key: proves reachability, credentials and that the service answers OData."""
        self.client.get_json(
            "A_BusinessPartner",
            params={"$top": "1", "$select": "BusinessPartner", "$format": "json"},
            operation="test_connection",
        )

    def incremental_filter(self, cursor: Mapping[str, Any] | None) -> str | None:
        """`LastChangeDate ge datetime'...'` minus the overlap window (the field is date-granular).

        A partner that was created but never changed has no LastChangeDate, so its CreationDate is
        asked for too.
        """
        if not cursor or not cursor.get("last_change_date"):
            return None
        since = date.fromisoformat(str(cursor["last_change_date"])) - timedelta(days=self.overlap_days)
        literal = datetime_literal(since)
        return f"(LastChangeDate ge {literal} or CreationDate ge {literal})"

    def first_url(self, stream: Stream, cursor: Mapping[str, Any] | None) -> str:
        params: dict[str, Any] = {"$format": "json", "$top": self.page_size}
        if stream.select:
            params["$select"] = ",".join(stream.select)
        if stream.expand:
            params["$expand"] = ",".join(stream.expand)
        if stream.order_by:
            params["$orderby"] = ",".join(stream.order_by)
        flt = self.incremental_filter(cursor)
        if flt:
            params["$filter"] = flt
        return with_query(stream.path, **params)

    def count(self, stream: Stream, position: PagePosition) -> int:
        """How many records the read starting at `position` covers now (`$count` with the same `$filter`).

        A run compares this with the distinct keys it read: fewer keys read than the source counted
        means the read missed rows, and the watermark must not move past them.
        """
        flt = query_of(position.url).get("$filter")
        params = {"$filter": flt} if flt else {}
        response = self.client.request("GET", f"{stream.path}/$count", params=params, headers={"Accept": "text/plain"}, operation=f"count_{stream.name}")
        text = response.text.strip()
        if not text.isdigit():
            raise classify_exception(
                ValueError(f"$count answered {text[:80]!r}, not a number"), integration=self.integration, operation=f"count_{stream.name}"
            )
        return int(text)

    def split(self, stream: Stream, position: PagePosition, partitions: int) -> list[PagePosition]:
        """The read starting at `position` cut into up to `partitions` key ranges, each read on its own.

        The boundaries are the keys at every 1/N of the read's key order (`$skip` probes of one key each,
        `$select` of the key alone): N-1 small requests. A range is `key ge '<low>' and key lt '<high>'`
        added to the read's own `$filter`, so the ranges cover every key the read would find, each once,
        whatever happens to the data meanwhile (a boundary is a key value, not an offset). Each range pages
        by key inside itself, like any read (ODataKeysetPaginator).
        """
        key = stream.primary_key
        base = query_of(position.url).get("$filter") or ""
        total = self.count(stream, position)
        bounds: list[str] = []
        for k in range(1, max(1, min(partitions, total))):
            params: dict[str, Any] = {"$format": "json", "$select": key, "$orderby": f"{key} asc", "$skip": (k * total) // partitions, "$top": 1}
            if base:
                params["$filter"] = base
            body = self.client.get_json(stream.path, params=params, operation=f"split_{stream.name}")
            rows = body.get("d", {}).get("results") if isinstance(body, dict) else None
            if rows and isinstance(rows[0], dict) and isinstance(rows[0].get(key), str) and (not bounds or rows[0][key] > bounds[-1]):
                bounds.append(rows[0][key])
        starts = []
        for low, high in zip([None, *bounds], [*bounds, None], strict=True):
            clauses = [f"({base})"] if base else []
            clauses += [f"{key} ge {odata_string(low)}"] if low is not None else []
            clauses += [f"{key} lt {odata_string(high)}"] if high is not None else []
            url = with_query(position.url, **({"$filter": " and ".join(clauses)} if clauses else {}))
            starts.append(stream.paginator.start(url))
        return starts

    # -- writes (CSRF) ----------------------------------------------------------------------
    def fetch_csrf_token(self) -> str:
        """SAP's CSRF dance: HEAD the service root with `X-CSRF-Token: Fetch` (GET when HEAD is refused)."""
        for method in ("HEAD", "GET"):
            try:
                response = self.client.request(method, "", headers={"X-CSRF-Token": "Fetch"}, operation="csrf_fetch")
            except IntegrationError as error:
                if method == "HEAD" and error.status_code in (405, 501):
                    continue
                raise
            token = response.headers.get("x-csrf-token")
            if token and token.lower() != "required":
                self._csrf_token = token
                return token
        raise AuthenticationFailed("SAP did not issue a CSRF token (x-csrf-token header missing)", integration=self.integration)

    def write(
        self, method: str, url: str, *, json: Any = None, if_match: str | None = None, retry: bool = True, operation: str | None = None,
        content: bytes | None = None, content_type: str | None = None,
    ) -> httpx.Response:
        """A modifying request with the CSRF token and session cookies; an expired token is refetched once.

        `retry=False` sends it once: a create whose answer was lost must be looked up, not sent again blindly.
        `content`/`content_type`: a body that is not JSON (a `$batch`'s multipart).
        """
        for attempt in (1, 2):
            token = self._csrf_token or self.fetch_csrf_token()
            headers = {"X-CSRF-Token": token, "Accept": "application/json"}
            if if_match:
                headers["If-Match"] = if_match
            if content_type:
                headers["Content-Type"] = content_type
            body: dict[str, Any] = {"content": content} if content is not None else {"json": json}
            try:
                return self.client.request(method, url, headers=headers, operation=operation or f"write_{method.lower()}", retry=retry, **body)
            except IntegrationError as error:
                # SAP answers 403 with `x-csrf-token: Required` and this body text (the header value is
                # masked in our redacted snapshot, the body is not).
                required = error.status_code == 403 and "csrf token validation failed" in error.message.lower()
                if required and attempt == 1:
                    log.info("SAP CSRF token expired; fetching a new one")
                    self._csrf_token = None
                    continue
                raise
        raise AssertionError("unreachable")

    def batch(self, items: Sequence[BatchItem], *, operation: str = "batch") -> list[ItemResult]:
        """Send retrieves and change sets in one `$batch` POST (one request of the rate budget); an answer per item.

        The CSRF token is the outer request's (refetched once after a 403, as any write). A batch that creates
        something is sent once: after a timeout or a 5xx its creates may or may not exist, the caller looks.
        """
        content_type, body = build_batch(items)
        response = self.write("POST", "$batch", content=body, content_type=content_type, retry=not has_create(items), operation=operation)
        return parse_batch(
            response.headers.get("content-type", ""), response.content, items, base_url=str(self.client.http.base_url),
            integration=self.integration, body_parser=self.client.body_parser,
        )

    def get_business_partner(self, partner: str) -> dict[str, Any]:
        body = self.client.get_json(f"A_BusinessPartner('{quote(partner)}')", params={"$format": "json"}, operation="read_partner")
        return dict(body["d"])

    def update_business_partner(self, partner: str, changes: Mapping[str, Any], etag: str) -> None:
        """PATCH a partner (If-Match with its ETag; 412 means someone changed it first)."""
        self.write("PATCH", f"A_BusinessPartner('{quote(partner)}')", json=dict(changes), if_match=etag)
