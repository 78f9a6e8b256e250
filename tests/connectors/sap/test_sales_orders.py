"""The sales-order connector: the datetimeoffset literal, the overlap, the service URL beside the partners'."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import httpx
import pytest

from connectors.core.paging import query_of
from connectors.sap.odata import datetimeoffset_literal
from connectors.sap.sales_orders import SALES_ORDERS, read_since, service_url
from hub.core.settings import reset_settings_cache, sap_sales_order_options
from hub.runtime.connections import build_sap_sales_order_connector


def test_datetimeoffset_literal_is_utc_with_z() -> None:
    assert datetimeoffset_literal(datetime(2026, 12, 1, 10, 0, tzinfo=UTC)) == "datetimeoffset'2026-12-01T10:00:00Z'"
    ist = timezone(timedelta(hours=5, minutes=30))
    assert datetimeoffset_literal(datetime(2026, 12, 1, 15, 30, tzinfo=ist)) == "datetimeoffset'2026-12-01T10:00:00Z'"
    # Sub-second precision survives (LastChangeDateTime has precision 7), without trailing zeros.
    assert datetimeoffset_literal(datetime(2026, 12, 1, 10, 0, 0, 250000, tzinfo=UTC)) == "datetimeoffset'2026-12-01T10:00:00.25Z'"


def test_datetimeoffset_literal_refuses_a_naive_datetime() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        datetimeoffset_literal(datetime(2026, 12, 1, 10, 0))  # noqa: DTZ001 - the naive datetime is the point


def test_service_url_sits_beside_the_partner_service() -> None:
    base = "https://s4.example.com:44300/sap/opu/odata/sap/API_BUSINESS_PARTNER/"
    assert service_url(base, "API_SALES_ORDER_SRV") == "https://s4.example.com:44300/sap/opu/odata/sap/API_SALES_ORDER_SRV/"
    assert service_url(base.rstrip("/") + "?sap-client=100", "X") == "https://s4.example.com:44300/sap/opu/odata/sap/X/"
    with pytest.raises(ValueError, match="names no service"):
        service_url("https://s4.example.com/", "API_SALES_ORDER_SRV")


def test_read_since_refuses_a_watermark_without_zone() -> None:
    assert read_since({"last_change_at": "2026-12-01T10:00:00+00:00"}) == datetime(2026, 12, 1, 10, tzinfo=UTC)
    assert read_since(None) is None
    with pytest.raises(ValueError, match="no time zone"):
        read_since({"last_change_at": "2026-12-01T10:00:00"})


def _requests_of(monkeypatch: pytest.MonkeyPatch, **env: str) -> tuple[list[httpx.Request], httpx.MockTransport]:
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    reset_settings_cache()
    seen: list[httpx.Request] = []

    def answer(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, json={"d": {"results": []}})

    return seen, httpx.MockTransport(answer)


def test_incremental_read_filters_on_last_change_datetime_minus_the_overlap(monkeypatch: pytest.MonkeyPatch) -> None:
    seen, transport = _requests_of(monkeypatch, SAP_BASE_URL="http://sap.test/sap/opu/odata/sap/API_BUSINESS_PARTNER/")
    try:
        overlap = sap_sales_order_options().overlap_s
        with build_sap_sales_order_connector(transport=transport) as connector:
            position = connector.start(SALES_ORDERS, {"last_change_at": "2026-12-01T10:00:00+00:00"})
            connector.fetch_page(SALES_ORDERS, position)
    finally:
        monkeypatch.undo()
        reset_settings_cache()
    since = datetime(2026, 12, 1, 10, tzinfo=UTC) - timedelta(seconds=overlap)
    assert query_of(position.url)["$filter"] == f"LastChangeDateTime ge {datetimeoffset_literal(since)}"
    assert query_of(position.url)["$orderby"] == "SalesOrder asc"
    [request] = seen
    # The service is derived from the partner service's URL: same host, API_SALES_ORDER_SRV.
    assert request.url.path == "/sap/opu/odata/sap/API_SALES_ORDER_SRV/A_SalesOrder"
    assert "X-CSRF-Token" not in request.headers  # reads need no token


def test_a_configured_overlap_and_service_url_are_used(monkeypatch: pytest.MonkeyPatch, tmp_path: object) -> None:
    from pathlib import Path

    from hub.core.settings import ROOT

    config = Path(str(tmp_path)) / "integrations.toml"
    text = (ROOT / "config" / "integrations.toml").read_text(encoding="utf-8").replace("overlap_s = 300", "overlap_s = 60")
    config.write_text(text, encoding="utf-8")
    seen, transport = _requests_of(
        monkeypatch, INTEGRATIONS_FILE=str(config), SAP_SALES_ORDER_BASE_URL="http://orders.test/custom/API_SALES_ORDER_SRV/"
    )
    try:
        with build_sap_sales_order_connector(transport=transport) as connector:
            assert connector.overlap_s == 60
            position = connector.start(SALES_ORDERS, {"last_change_at": "2026-12-01T10:00:00Z"})
            connector.fetch_page(SALES_ORDERS, position)
    finally:
        monkeypatch.undo()
        reset_settings_cache()
    assert query_of(position.url)["$filter"] == "LastChangeDateTime ge datetimeoffset'2026-12-01T09:59:00Z'"
    assert str(seen[0].url).startswith("http://orders.test/custom/API_SALES_ORDER_SRV/A_SalesOrder?")


def test_a_full_read_has_no_filter(monkeypatch: pytest.MonkeyPatch) -> None:
    _, transport = _requests_of(monkeypatch)
    try:
        with build_sap_sales_order_connector(transport=transport) as connector:
            assert "$filter" not in query_of(connector.start(SALES_ORDERS, None).url)
    finally:
        monkeypatch.undo()
        reset_settings_cache()
