"""The SAP API_SALES_ORDER_SRV sandbox serves a dry-mix maker's order book the way SAP does, and its drills work."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import httpx
import pytest

from sandbox.core import as_transport, running_server
from sandbox.odata import EntityType, Nav, ODataSandbox, ODataService, parse_wire_datetime, span, string_prop
from sandbox.sales_orders import (
    DIRTY_KINDS,
    FUTURE_CHANGE,
    PRODUCTS_BY_MATERIAL,
    SERVICE_ROOT,
    UNITS,
    SalesOrderSandbox,
)
from sandbox.sap import SERVICE_ROOT as BP_ROOT
from sandbox.sap import TOKEN_PATH, build_sap_system, partner_id

ORDERS = f"{SERVICE_ROOT}A_SalesOrder"
BASIC = ("DRYMIX_INT", "sandbox-secret")
BASE = "http://sap.test"
NOW = datetime(2026, 11, 28, 10, 15, 30, 250_000, tzinfo=UTC)
EXPAND = "to_Item,to_Partner,to_PricingElement"
SINCE_2026 = "LastChangeDateTime ge datetimeoffset'2026-01-01T00:00:00Z'"


class FakeClock:
    """A settable sandbox clock."""

    def __init__(self, start: datetime = NOW) -> None:
        self.now = start

    def __call__(self) -> datetime:
        return self.now


def client_for(sandbox: Any, **headers: str) -> httpx.Client:
    return httpx.Client(
        transport=as_transport(sandbox), base_url=BASE, auth=BASIC, headers={"Accept": "application/json", **headers}
    )


def pull_all(client: httpx.Client, url: str, params: dict[str, str] | None) -> tuple[list[dict[str, Any]], int]:
    """Follow __next to the end: (rows, pages)."""
    rows: list[dict[str, Any]] = []
    pages = 0
    next_url: str | None = url
    while next_url:
        resp = client.get(next_url, params=params)
        assert resp.status_code == 200, resp.text
        page = resp.json()["d"]
        rows.extend(page["results"])
        next_url, params = page.get("__next"), None
        pages += 1
        assert pages < 500, "paging does not terminate"
    return rows, pages


def ms_of(wire: str) -> int:
    return parse_wire_datetime(wire)


@pytest.fixture(scope="module")
def reader() -> SalesOrderSandbox:
    """A read-only order book shared by the query tests."""
    return SalesOrderSandbox(orders=600, seed=3, max_page_size=100)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def book(clock: FakeClock) -> SalesOrderSandbox:
    """A small order book each test may change."""
    return SalesOrderSandbox(orders=250, seed=5, clock=clock, max_page_size=50)


# -- reading -------------------------------------------------------------------------------------


def test_server_paging_returns_every_order_once_in_key_order(reader: SalesOrderSandbox) -> None:
    with client_for(reader) as client:
        rows, pages = pull_all(client, ORDERS, {"$select": "SalesOrder"})
    ids = [row["SalesOrder"] for row in rows]
    assert ids == reader.order_ids() == sorted(ids)
    assert len(ids) == 600 and pages == 6


def test_keyset_paging_on_sales_order_with_the_delta_filter(reader: SalesOrderSandbox) -> None:
    """`SalesOrder gt '<last>'` pages with $orderby=SalesOrder and $top, combined with the delta filter."""
    seen: list[str] = []
    last = ""
    with client_for(reader) as client:
        while True:
            flt = SINCE_2026 if not last else f"{SINCE_2026} and SalesOrder gt '{last}'"
            resp = client.get(ORDERS, params={"$filter": flt, "$orderby": "SalesOrder", "$top": "37", "$expand": EXPAND})
            rows = resp.json()["d"]["results"]
            if not rows:
                break
            assert all(row["to_Item"]["results"] for row in rows)
            seen.extend(row["SalesOrder"] for row in rows)
            last = rows[-1]["SalesOrder"]
    cutoff = int(datetime(2026, 1, 1, tzinfo=UTC).timestamp() * 1000)
    expected = [so for so in reader.order_ids() if ms_of(reader.get_order(so)["LastChangeDateTime"]) >= cutoff]
    assert seen == expected
    assert 0 < len(expected) < 600


def test_expand_renders_items_partners_and_pricing_like_sap(reader: SalesOrderSandbox) -> None:
    so = next(so for so in reader.order_ids()[42:] if so not in reader.dirty_ids)
    with client_for(reader) as client:
        resp = client.get(f"{ORDERS}('{so}')", params={"$expand": EXPAND})
        deferred = client.get(f"{ORDERS}('{so}')").json()["d"]
        nav = client.get(f"{ORDERS}('{so}')/to_Item").json()["d"]["results"]
    assert resp.status_code == 200
    order = resp.json()["d"]
    stored = reader.get_order(so)
    assert order["__metadata"]["type"] == "API_SALES_ORDER_SRV.A_SalesOrderType"
    items = order["to_Item"]["results"]
    assert [item["SalesOrderItem"] for item in items] == [item["SalesOrderItem"] for item in stored["to_Item"]]
    assert items[0]["__metadata"]["uri"].endswith(f"A_SalesOrderItem(SalesOrder='{so}',SalesOrderItem='10')")
    assert {p["PartnerFunction"] for p in order["to_Partner"]["results"]} >= {"AG", "WE", "RE", "RG"}
    assert deferred["to_Item"] == {"__deferred": {"uri": f"{BASE}{ORDERS}('{so}')/to_Item"}}
    assert [item["SalesOrderItem"] for item in nav] == [item["SalesOrderItem"] for item in items]
    # The header total is the sum of the items not rejected; pricing adds up to it.
    live = [Decimal(item["NetAmount"]) for item in items if not item["SalesDocumentRjcnReason"]]
    assert Decimal(order["TotalNetAmount"]) == sum(live)
    pricing = {p["ConditionType"]: Decimal(p["ConditionAmount"]) for p in order["to_PricingElement"]["results"]}
    assert pricing["PR00"] + pricing.get("K007", Decimal(0)) == Decimal(order["TotalNetAmount"])
    assert {"JOIG"} <= pricing.keys() or {"JOCG", "JOSG"} <= pricing.keys()


def test_datetimeoffset_filter_accepts_z_and_seven_fractional_digits(reader: SalesOrderSandbox) -> None:
    stamps = {so: ms_of(reader.get_order(so)["LastChangeDateTime"]) for so in reader.order_ids()}
    pivot = sorted(stamps.values())[300]
    text = datetime.fromtimestamp(pivot / 1000, tz=UTC).strftime("%Y-%m-%dT%H:%M:%S")
    fraction = f"{pivot % 1000:03d}4567"  # 7 digits; the extra 0.4567 ms puts the pivot itself below
    select = {"$select": "SalesOrder"}
    with client_for(reader) as client:
        whole, _ = pull_all(client, ORDERS, {**select, "$filter": f"LastChangeDateTime ge datetimeoffset'{text}Z'"})
        fine, _ = pull_all(
            client, ORDERS, {**select, "$filter": f"LastChangeDateTime gt datetimeoffset'{text}.{fraction}Z'"}
        )
        offset, _ = pull_all(client, ORDERS, {**select, "$filter": f"LastChangeDateTime ge datetimeoffset'{text}+00:00'"})
        fraction_with_offset = client.get(
            ORDERS, params={"$filter": f"LastChangeDateTime gt datetimeoffset'{text}.{fraction}+05:30'"}
        )
    second = pivot - pivot % 1000
    assert {r["SalesOrder"] for r in whole} == {so for so, t in stamps.items() if t >= second}
    assert {r["SalesOrder"] for r in fine} == {so for so, t in stamps.items() if t > pivot}
    assert offset == whole
    assert fraction_with_offset.status_code == 200


def test_count_is_text_plain_whatever_the_accept_header(reader: SalesOrderSandbox) -> None:
    with client_for(reader) as client:
        plain = client.get(f"{ORDERS}/$count", headers={"Accept": "application/json"})
        filtered = client.get(f"{ORDERS}/$count", params={"$filter": SINCE_2026, "$format": "json"})
        items = client.get(f"{ORDERS}('{reader.order_ids()[0]}')/to_Item/$count")
    assert plain.status_code == 200
    assert plain.headers["content-type"].startswith("text/plain")
    assert plain.text == "600"
    assert filtered.headers["content-type"].startswith("text/plain")
    assert 0 < int(filtered.text) < 600
    assert items.text == str(len(reader.get_order(reader.order_ids()[0])["to_Item"]))


def test_order_etag_is_its_last_change_datetimeoffset(reader: SalesOrderSandbox) -> None:
    so = reader.order_ids()[7]
    stamp = ms_of(reader.get_order(so)["LastChangeDateTime"])
    moment = datetime.fromtimestamp(stamp // 1000, tz=UTC)
    expected = f"W/\"datetimeoffset'{moment:%Y-%m-%dT%H%%3A%M%%3A%S}.{stamp % 1000:03d}0000Z'\""
    with client_for(reader) as client:
        resp = client.get(f"{ORDERS}('{so}')")
        metadata = client.get(f"{SERVICE_ROOT}$metadata")
    assert resp.headers["etag"] == expected == resp.json()["d"]["__metadata"]["etag"] == reader.etag_of(so)
    ns = {"edm": "http://schemas.microsoft.com/ado/2008/09/edm"}
    root = ET.fromstring(metadata.content)
    props = {
        p.get("Name"): p
        for p in root.iterfind(".//edm:EntityType[@Name='A_SalesOrderType']/edm:Property", ns)
    }
    assert props["LastChangeDateTime"].get("Type") == "Edm.DateTimeOffset"
    assert props["LastChangeDateTime"].get("Precision") == "7"
    assert props["LastChangeDateTime"].get("ConcurrencyMode") == "Fixed"
    item_props = {p.get("Name") for p in root.iterfind(".//edm:EntityType[@Name='A_SalesOrderItemType']/edm:Property", ns)}
    assert {"SalesDocumentRjcnReason", "RequestedQuantity", "RequestedQuantityUnit", "Material"} <= item_props
    assert "OverallOrdReltdBillgStatus" in props


def test_order_book_looks_like_a_dry_mix_maker_in_india(reader: SalesOrderSandbox) -> None:
    orders = [reader.get_order(so) for so in reader.order_ids()]
    items = [item for order in orders for item in order["to_Item"]]
    assert all(1 <= len(order["to_Item"]) <= 9 for order in orders)  # 1-8, one more only through a drill
    assert Counter(order["TransactionCurrency"] for order in orders) == {"INR": 600}
    assert {item["ProductionPlant"] for item in items} == {"1010", "1020", "1030"}
    clean = [item for order in orders if order["SalesOrder"] not in reader.dirty_ids for item in order["to_Item"]]
    assert {item["RequestedQuantityUnit"] for item in clean} == set(UNITS)
    assert {item["Material"] for item in clean} <= PRODUCTS_BY_MATERIAL.keys()
    assert any("Wall Putty" in item["SalesOrderItemText"] for item in items)
    assert any(item["SalesDocumentRjcnReason"] for item in items)
    for status in ("OverallSDProcessStatus", "OverallDeliveryStatus", "OverallOrdReltdBillgStatus"):
        assert {"A", "B", "C"} <= {order[status] for order in orders}
    assert {"A", "B"} <= {order["OverallSDDocumentRejectionSts"] for order in orders}
    assert {order["SoldToParty"] for order in orders} <= {partner_id(i) for i in range(10_000)} | {""}


# -- dirty data and determinism --------------------------------------------------------------


def test_dirty_orders_of_every_kind_are_present_and_exposed(reader: SalesOrderSandbox) -> None:
    dirty = reader.dirty_ids
    assert Counter(dirty.values()).keys() == set(DIRTY_KINDS)
    first_200 = Counter(kind for so, kind in dirty.items() if int(so) < 1_000_201)
    assert all(first_200[kind] >= 2 for kind in DIRTY_KINDS)
    assert len(dirty) < 0.1 * 600
    for so, kind in dirty.items():
        order = reader.get_order(so)
        items = order["to_Item"]
        if kind == "missing_material":
            assert any(item["Material"] == "" for item in items)
        elif kind == "invalid_quantity":
            assert any(Decimal(item["RequestedQuantity"]) <= 0 for item in items)
        elif kind == "unknown_unit":
            assert any(item["RequestedQuantityUnit"] not in UNITS for item in items)
        elif kind == "missing_sold_to":
            assert order["SoldToParty"] == ""
            assert "AG" not in {p["PartnerFunction"] for p in order["to_Partner"]}
        elif kind == "future_change":
            assert ms_of(order["LastChangeDateTime"]) >= FUTURE_CHANGE.timestamp() * 1000
        else:
            assert any(item["TransactionCurrency"] != order["TransactionCurrency"] for item in items)
    clean = [so for so in reader.order_ids() if so not in dirty]
    assert all(reader.get_order(so)["SoldToParty"] for so in clean)
    with client_for(reader) as client:
        assert client.get("/_sandbox/sales-orders/dirty").json() == {"count": len(dirty), "dirty": dirty}


def test_same_seed_gives_identical_responses_and_another_seed_differs() -> None:
    pages = []
    for seed in (11, 11, 12):
        sandbox = SalesOrderSandbox(orders=150, seed=seed, clock=FakeClock())
        with client_for(sandbox) as client:
            pages.append(client.get(ORDERS, params={"$expand": EXPAND}).content)
    assert pages[0] == pages[1]
    assert pages[0] != pages[2]


# -- drills ----------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["quantity", "item_added", "item_removed"])
def test_changed_items_show_up_with_a_later_last_change(book: SalesOrderSandbox, clock: FakeClock, kind: str) -> None:
    target = next(so for so in book.order_ids() if len(book.get_order(so)["to_Item"]) >= 2 and so not in book.dirty_ids)
    before = book.get_order(target)
    etag_before = book.etag_of(target)
    clock.now = NOW + timedelta(hours=2)
    assert book.change_items([target], seed=1, kind=kind) == {target: kind}
    after = book.get_order(target)
    assert ms_of(after["LastChangeDateTime"]) == int(clock.now.timestamp() * 1000)
    assert after["LastChangeDate"] == f"/Date({int(datetime(2026, 11, 28, tzinfo=UTC).timestamp() * 1000)})/"
    old_items = {i["SalesOrderItem"]: i for i in before["to_Item"]}
    new_items = {i["SalesOrderItem"]: i for i in after["to_Item"]}
    if kind == "quantity":
        assert old_items.keys() == new_items.keys()
        changed = [n for n in old_items if old_items[n]["RequestedQuantity"] != new_items[n]["RequestedQuantity"]]
        assert len(changed) == 1
        assert old_items[changed[0]]["NetAmount"] != new_items[changed[0]]["NetAmount"]
    elif kind == "item_added":
        added = new_items.keys() - old_items.keys()
        assert len(added) == 1 and int(added.pop()) == max(int(n) for n in old_items) + 10
    else:
        assert len(new_items) == len(old_items) - 1 and new_items.keys() < old_items.keys()
    live = [Decimal(i["NetAmount"]) for i in after["to_Item"] if not i["SalesDocumentRjcnReason"]]
    assert Decimal(after["TotalNetAmount"]) == sum(live)
    since = (NOW + timedelta(hours=1)).strftime("%Y-%m-%dT%H:%M:%SZ")
    with client_for(book) as client:
        delta = client.get(ORDERS, params={"$filter": f"LastChangeDateTime gt datetimeoffset'{since}'", "$expand": "to_Item"})
        reread = client.get(f"{ORDERS}('{target}')")
        items_set = client.get(f"{SERVICE_ROOT}A_SalesOrderItem/$count", params={"$filter": f"SalesOrder eq '{target}'"})
    assert [row["SalesOrder"] for row in delta.json()["d"]["results"] if not book.dirty_ids.get(row["SalesOrder"])] == [target]
    served = next(row for row in delta.json()["d"]["results"] if row["SalesOrder"] == target)
    assert sorted(i["SalesOrderItem"] for i in served["to_Item"]["results"]) == sorted(new_items)
    assert reread.headers["etag"] == book.etag_of(target) != etag_before
    assert items_set.text == str(len(new_items))


def test_change_items_by_count_is_reproducible_by_seed(clock: FakeClock) -> None:
    twins = [SalesOrderSandbox(orders=120, seed=9, clock=clock) for _ in range(2)]
    changed = [sandbox.change_items(7, seed=4) for sandbox in twins]
    assert changed[0] == changed[1] and len(changed[0]) == 7
    assert [twins[0].get_order(so) for so in changed[0]] == [twins[1].get_order(so) for so in changed[0]]


def test_a_deleted_order_is_gone_from_every_set_and_404(book: SalesOrderSandbox) -> None:
    target, neighbour = book.order_ids()[10], book.order_ids()[11]
    neighbour_before = book.get_order(neighbour)
    items = len(book.get_order(target)["to_Item"])
    with client_for(book) as client:
        total_items = int(client.get(f"{SERVICE_ROOT}A_SalesOrderItem/$count").text)
        assert book.delete_orders([target]) == [target]
        gone = client.get(f"{ORDERS}('{target}')")
        listed = [row["SalesOrder"] for row in pull_all(client, ORDERS, {"$select": "SalesOrder"})[0]]
        item_count = client.get(f"{SERVICE_ROOT}A_SalesOrderItem/$count").text
        orphans = client.get(
            f"{SERVICE_ROOT}A_SalesOrderHeaderPartner/$count", params={"$filter": f"SalesOrder eq '{target}'"}
        ).text
        neighbour_now = client.get(f"{ORDERS}('{neighbour}')", params={"$expand": EXPAND}).json()["d"]
        order_count = client.get(f"{ORDERS}/$count").text
    assert gone.status_code == 404
    assert target not in listed and len(listed) == 249
    assert order_count == "249"
    assert int(item_count) == total_items - items
    assert orphans == "0"
    assert [i["SalesOrderItem"] for i in neighbour_now["to_Item"]["results"]] == [
        i["SalesOrderItem"] for i in neighbour_before["to_Item"]
    ]
    assert book.get_order(neighbour) == neighbour_before
    assert book.deleted_ids == [target]
    with pytest.raises(KeyError):
        book.delete_orders([target])


def test_rejecting_an_item_updates_totals_and_rejection_status(book: SalesOrderSandbox, clock: FakeClock) -> None:
    target = next(
        so
        for so in book.order_ids()
        if len(book.get_order(so)["to_Item"]) >= 2 and book.get_order(so)["OverallSDDocumentRejectionSts"] == "A"
    )
    before = book.get_order(target)
    clock.now = NOW + timedelta(minutes=5)
    item = book.reject_item(target, reason="04")
    after = book.get_order(target)
    rejected = next(i for i in after["to_Item"] if i["SalesOrderItem"] == item)
    assert rejected["SalesDocumentRjcnReason"] == "04"
    assert after["OverallSDDocumentRejectionSts"] == "B"
    assert Decimal(after["TotalNetAmount"]) == Decimal(before["TotalNetAmount"]) - Decimal(rejected["NetAmount"])
    assert ms_of(after["LastChangeDateTime"]) == int(clock.now.timestamp() * 1000)


def test_make_dirty_and_repairing_changes_update_dirty_ids(book: SalesOrderSandbox) -> None:
    target = next(so for so in book.order_ids() if so not in book.dirty_ids)
    book.make_dirty(target, "missing_sold_to")
    assert book.dirty_ids[target] == "missing_sold_to"
    assert book.get_order(target)["SoldToParty"] == ""
    other = next(so for so in book.order_ids() if so not in book.dirty_ids and len(book.get_order(so)["to_Item"]) == 1)
    book.make_dirty(other, "missing_material")
    assert book.dirty_ids[other] == "missing_material"
    book.change_items([other], seed=2, kind="item_added")
    assert book.dirty_ids[other] == "missing_material"  # the bad item is still there
    with pytest.raises(ValueError):
        book.make_dirty(target, "not_a_kind")


def test_control_routes_run_the_drills(book: SalesOrderSandbox) -> None:
    ids = book.order_ids()
    with client_for(book) as client:
        changed = client.post("/_sandbox/sales-orders/change-items", json={"orders": ids[:3], "seed": 1})
        counted = client.post("/_sandbox/sales-orders/change-items", json={"count": 2, "kind": "quantity"})
        deleted = client.post("/_sandbox/sales-orders/delete", json={"orders": [ids[5]]})
        rejected = client.post("/_sandbox/sales-orders/reject-item", json={"order": ids[6]})
        dirtied = client.post("/_sandbox/sales-orders/make-dirty", json={"order": ids[7], "kind": "future_change"})
        added = client.post("/_sandbox/sales-orders/add-orders", json={"count": 2})
        unknown = client.post("/_sandbox/sales-orders/delete", json={"orders": ["9999999"]})
        bad = client.post("/_sandbox/sales-orders/change-items", json={"count": -1})
        info = client.get("/_sandbox/sales-orders/info").json()
        new_order = client.get(f"{ORDERS}('{added.json()['added'][0]}')", params={"$expand": "to_Item"})
    assert changed.status_code == 200 and set(changed.json()["changed"]) == set(ids[:3])
    assert counted.json()["count"] == 2 and set(counted.json()["changed"].values()) == {"quantity"}
    assert deleted.json() == {"deleted": [ids[5]], "count": 1}
    assert rejected.json()["item"]
    assert dirtied.status_code == 200 and book.dirty_ids[ids[7]] == "future_change"
    assert added.json()["count"] == 2 and added.json()["added"][0] == "1000251"
    assert new_order.status_code == 200 and new_order.json()["d"]["OverallSDProcessStatus"] == "A"
    assert ms_of(new_order.json()["d"]["LastChangeDateTime"]) == int(NOW.timestamp() * 1000)
    assert unknown.status_code == 404 and bad.status_code == 400
    assert info["orders"] == 251 and info["deleted"] == 1


# -- one SAP host, both services -------------------------------------------------------------


def test_one_real_http_server_serves_both_services_with_one_logon() -> None:
    system = build_sap_system(partners=400, orders=150, seed=42, max_page_size=100)
    partners, orders = system.services
    assert isinstance(orders, SalesOrderSandbox)
    with running_server(system) as base_url, httpx.Client(base_url=base_url) as client:
        token = client.post(
            TOKEN_PATH, auth=("drymix-hub", "sandbox-client-secret"), data={"grant_type": "client_credentials"}
        ).json()["access_token"]
        bearer = {"Authorization": f"Bearer {token}", "Accept": "application/json"}
        so_page = client.get(ORDERS, params={"$expand": "to_Partner"}, headers=bearer)
        bp_page = client.get(f"{BP_ROOT}A_BusinessPartner", params={"$select": "BusinessPartner,Customer"}, headers=bearer)
        so_count = client.get(f"{ORDERS}/$count", auth=BASIC, headers={"Accept": "application/json"})
        # A CSRF session fetched on one service is the system's session.
        fetched = client.get(SERVICE_ROOT, headers={**bearer, "X-CSRF-Token": "Fetch"})
        health = client.get("/_sandbox/health").json()
        changed = client.post("/_sandbox/sales-orders/change-items", json={"count": 1, "seed": 3}).json()
        mutated = client.post("/_sandbox/sap/mutate", json={"count": 1, "seed": 3}).json()
        client.put("/_sandbox/faults", json={"rate_limit_next_n": 1, "retry_after_s": 0})
        limited = client.get(ORDERS, headers=bearer)
        after = client.get(ORDERS, params={"$top": "1"}, headers=bearer)
        client.delete("/_sandbox/faults")
        moved = client.post("/_sandbox/sap/clock", json={"advance_s": 1800}).json()
        moved_again = client.post("/_sandbox/sales-orders/clock", json={"advance_s": 1800}).json()
        expired = client.get(ORDERS, params={"$top": "1"}, headers=bearer)
    assert so_page.status_code == 200 and bp_page.status_code == 200, so_page.text
    assert so_count.text == "150"
    customers = {row["Customer"] for row in pull_rows(bp_page)} | set(partners.partner_ids())
    sold_to = {p["Customer"] for row in so_page.json()["d"]["results"] for p in row["to_Partner"]["results"] if p["PartnerFunction"] == "AG"}
    assert sold_to and sold_to <= customers
    assert so_page.json()["d"]["__next"].startswith(f"{base_url}{ORDERS}?")
    assert fetched.headers["x-csrf-token"] and "SAP_SESSIONID_S4H_100" in fetched.headers["set-cookie"]
    assert health["simulator"] == "sap"
    assert changed["count"] == 1 and mutated["count"] == 1
    assert limited.status_code == 429 and after.status_code == 200
    # One clock: moving it through either service's route moves both.
    assert abs(datetime.fromisoformat(moved_again["now"]) - partners.now()) < timedelta(seconds=5)
    assert datetime.fromisoformat(moved_again["now"]) - datetime.fromisoformat(moved["now"]) >= timedelta(seconds=1800)
    assert expired.status_code == 401  # the token's hour is over on the system clock


def pull_rows(resp: httpx.Response) -> Iterator[dict[str, Any]]:
    assert resp.status_code == 200, resp.text
    yield from resp.json()["d"]["results"]


def test_the_sales_order_sandbox_alone_serves_over_real_http(reader: SalesOrderSandbox) -> None:
    with running_server(reader) as base_url, httpx.Client(base_url=base_url, auth=BASIC) as client:
        rows, pages = pull_all(client, ORDERS, {"$format": "json", "$select": "SalesOrder", "$filter": SINCE_2026})
        missing = client.get(f"{ORDERS}('0000000')", params={"$format": "json"})
    assert pages >= 2 and [row["SalesOrder"] for row in rows] == sorted(row["SalesOrder"] for row in rows)
    assert missing.status_code == 404 and missing.json()["error"]["code"]


# -- the engine's row deletion (generic) -----------------------------------------------------

_PARENT = EntityType(
    "Z_ParentType",
    "Z_Parent",
    (string_prop("Id", 4, key=True), string_prop("Name", 20)),
    ("Id",),
    (Nav("to_Child", "Z_Child", True), Nav("to_Favourite", "Z_Child", False)),
)
_CHILD = EntityType(
    "Z_ChildType",
    "Z_Child",
    (string_prop("Id", 4, key=True), string_prop("Parent", 4)),
    ("Id",),
    (Nav("to_Parent", "Z_Parent", False), Nav("to_Sibling", "Z_Child", True)),
)
_ZSERVICE = ODataService("Z_TREE_SRV", "/sap/opu/odata/sap/Z_TREE_SRV/", "Z_TREE_SRV", (_PARENT, _CHILD))


class _Tree(ODataSandbox):
    """Three parents with contiguous children (spans), a single link each way and list links."""

    name = "tree"

    def __init__(self) -> None:
        super().__init__(_ZSERVICE)
        parents, children = self.tables["Z_Parent"], self.tables["Z_Child"]
        layout = {"P1": ["C1", "C2"], "P2": ["C3", "C4", "C5"], "P3": ["C6"]}
        for p, kids in layout.items():
            pi = parents.append((p, f"parent {p}"))
            first = len(children.rows)
            for kid in kids:
                ci = children.append((kid, p))
                children.links["to_Parent"][ci] = pi
            parents.links["to_Child"][pi] = span(first, len(children.rows))
            parents.links["to_Favourite"][pi] = len(children.rows) - 1
        for ci in range(len(children.rows)):
            children.links["to_Sibling"][ci] = [j for j in range(len(children.rows)) if j != ci and j % 2 == ci % 2]


def _ids(sandbox: ODataSandbox, set_name: str, link: Any) -> list[str]:
    table = sandbox.tables[set_name]
    if isinstance(link, int):
        return [] if link < 0 else [table.rows[link][0]]
    return [table.rows[i][0] for i in link]


def test_deleting_rows_remaps_every_navigation_link_and_key_lookup() -> None:
    tree = _Tree()
    children = tree.tables["Z_Child"]
    assert children.find(("C5",)) == 4
    tree.delete_rows("Z_Child", [1, 4])  # C2 and C5
    parents = tree.tables["Z_Parent"]
    assert [row[0] for row in children.rows] == ["C1", "C3", "C4", "C6"]
    assert children.find(("C5",)) is None and children.find(("C6",)) == 3
    by_parent = {row[0]: i for i, row in enumerate(parents.rows)}
    assert _ids(tree, "Z_Child", parents.links["to_Child"][by_parent["P1"]]) == ["C1"]
    assert _ids(tree, "Z_Child", parents.links["to_Child"][by_parent["P2"]]) == ["C3", "C4"]
    assert _ids(tree, "Z_Child", parents.links["to_Child"][by_parent["P3"]]) == ["C6"]
    assert isinstance(parents.links["to_Child"][by_parent["P2"]], range)  # spans stay spans
    assert parents.links["to_Favourite"][by_parent["P2"]] == -1  # its favourite C5 is gone
    assert _ids(tree, "Z_Child", parents.links["to_Favourite"][by_parent["P3"]]) == ["C6"]
    sibling_ids = {row[0]: _ids(tree, "Z_Child", children.links["to_Sibling"][i]) for i, row in enumerate(children.rows)}
    assert sibling_ids == {"C1": ["C3"], "C3": ["C1"], "C4": ["C6"], "C6": ["C4"]}
    assert all(_ids(tree, "Z_Parent", children.links["to_Parent"][i]) for i in range(len(children.rows)))

    tree.delete_rows("Z_Parent", [by_parent["P1"]])
    assert [_ids(tree, "Z_Parent", link) for link in children.links["to_Parent"]] == [[], ["P2"], ["P2"], ["P3"]]
    with client_for(tree) as client:
        root = _ZSERVICE.root
        assert client.get(f"{root}Z_Parent('P1')").status_code == 404
        expanded = client.get(f"{root}Z_Parent('P2')", params={"$expand": "to_Child,to_Favourite"}).json()["d"]
        assert [c["Id"] for c in expanded["to_Child"]["results"]] == ["C3", "C4"]
        assert expanded["to_Favourite"] is None
        assert client.get(f"{root}Z_Child/$count").text == "4"
        assert client.get(f"{root}Z_Child('C1')/to_Parent").status_code == 404
    with pytest.raises(IndexError):
        tree.delete_rows("Z_Child", [99])
