"""SAP S/4HANA API_SALES_ORDER_SRV (OData V2): sales orders with their items, partners and pricing.

The service sits beside API_BUSINESS_PARTNER under the same host (`/sap/opu/odata/sap/<SERVICE>/`), with
the same communication user; reads need no CSRF token. `A_SalesOrder` carries `LastChangeDateTime`
(Edm.DateTimeOffset, precision 7), so the incremental read is by time, not by day: `LastChangeDateTime ge
datetimeoffset'...'`, less `overlap_s` for SAP's commit lag (an order saved at 10:00:00 can become visible
after a read that started at 10:00:05 already passed it).
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from connectors.core.base import Stream
from connectors.core.client import IntegrationClient
from connectors.core.paging import ODataKeysetPaginator
from connectors.sap.connector import SapConnector
from connectors.sap.odata import datetimeoffset_literal

SALES_ORDER_SERVICE = "API_SALES_ORDER_SRV"
CURSOR_KEY = "last_change_at"  # the watermark: an ISO 8601 UTC timestamp of LastChangeDateTime

# Sales orders (A_SalesOrder), keyset-paged on the key like the business partners. What a read selects and
# expands is the dataset's choice (data_mappings/sales_orders.py SOURCE_EXPAND, hub/systems/sap.py).
SALES_ORDERS = Stream(
    name="sales_orders",
    path="A_SalesOrder",
    primary_key="SalesOrder",
    cursor_field="LastChangeDateTime",
    record_path=("d", "results"),
    order_by=("SalesOrder asc",),
    paginator=ODataKeysetPaginator("SalesOrder"),
)


def service_url(base_url: str, service: str) -> str:
    """The URL of another OData service of the same SAP system: the last path segment of `base_url` replaced.

    `.../sap/opu/odata/sap/API_BUSINESS_PARTNER/` -> `.../sap/opu/odata/sap/API_SALES_ORDER_SRV/` (query and
    fragment dropped).
    """
    parts = urlsplit(base_url)
    segments = [s for s in parts.path.split("/") if s]
    if not segments:
        raise ValueError(f"cannot derive the {service} service URL from {base_url!r}: it names no service")
    path = "/" + "/".join([*segments[:-1], service]) + "/"
    return urlunsplit((parts.scheme, parts.netloc, path, "", ""))


class SapSalesOrderConnector(SapConnector):
    """OData V2 client for API_SALES_ORDER_SRV: keyset-paged, counted reads incremental on LastChangeDateTime."""

    def __init__(self, client: IntegrationClient, *, page_size: int | None = None, overlap_s: int = 300) -> None:
        super().__init__(client, page_size=page_size)
        if overlap_s < 0:
            raise ValueError("overlap_s must be >= 0")
        self.overlap_s = overlap_s

    def connect(self) -> None:
        """Read one order key: proves reachability, credentials and that the sales-order service answers OData."""
        self.client.get_json(
            SALES_ORDERS.path, params={"$top": "1", "$select": "SalesOrder", "$format": "json"}, operation="test_connection"
        )

    def incremental_filter(self, cursor: Mapping[str, Any] | None) -> str | None:
        """`LastChangeDateTime ge datetimeoffset'...'`: the watermark less `overlap_s` seconds; None without one."""
        since = read_since(cursor)
        if since is None:
            return None
        return f"LastChangeDateTime ge {datetimeoffset_literal(since - timedelta(seconds=self.overlap_s))}"


def read_since(cursor: Mapping[str, Any] | None) -> datetime | None:
    """The watermark of a sales-order cursor as an aware UTC datetime; a cursor without a zone is refused."""
    value = (cursor or {}).get(CURSOR_KEY)
    if not value:
        return None
    since = datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    if since.tzinfo is None:
        raise ValueError(f"sales-order watermark {value!r} has no time zone")
    return since
