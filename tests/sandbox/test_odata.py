"""The OData engine is generic: a second, tiny service declared only here is served with SAP's protocol.

``ZMIXER_SRV`` has plants and mixing batches (a navigation each way, ten batches). Every test
runs against the engine both in-process (httpx transport) and over real HTTP (uvicorn).
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterator, Mapping
from contextlib import AbstractContextManager, contextmanager
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any

import httpx
import pytest

from sandbox.core import as_transport, running_server
from sandbox.odata import (
    EntityType,
    Nav,
    ODataSandbox,
    ODataService,
    Prop,
    Table,
    bad_request,
    bool_prop,
    date_prop,
    decimal_prop,
    int_prop,
    make_etag,
    row_builder,
    string_prop,
    wire_date,
)

# -- the second service: declarations, data and one write rule --------------------------------

ROOT = "/sap/opu/odata/sap/ZMIXER_SRV/"
PLANT_TYPE = EntityType(
    "Z_PlantType",
    "Z_Plant",
    (
        string_prop("Plant", 4, key=True),
        string_prop("PlantName", 30),
        string_prop("CityName", 40),
        bool_prop("IsActive"),
    ),
    ("Plant",),
    (Nav("to_Batch", "Z_Batch", True),),
)
BATCH_TYPE = EntityType(
    "Z_BatchType",
    "Z_Batch",
    (
        string_prop("Batch", 10, key=True),
        string_prop("Plant", 4, ro=True),
        string_prop("Material", 40),
        int_prop("Quantity"),
        decimal_prop("NetAmount"),
        date_prop("ProductionDate"),
        string_prop("ETag", 26, ro=True),
    ),
    ("Batch",),
    (Nav("to_Plant", "Z_Plant", False),),
    has_etag=True,
)
SERVICE = ODataService(
    "ZMIXER_SRV",
    ROOT,
    "ZMIXER_SRV",
    (PLANT_TYPE, BATCH_TYPE),
    updatable=frozenset({"Z_Batch"}),
    component_id="PP-SFC",
)

PLANTS = (("P100", "Pune Mixer", "Pune", True), ("P200", "Chennai Mixer", "Chennai", True), ("P300", "Nagpur", "Nagpur", False))
# (batch, plant, material, quantity, net amount, production day)
BATCHES = (
    ("B000000001", "P100", "DM-TILE-ADH-20KG", 40, "1520.00", date(2026, 3, 1)),
    ("B000000002", "P200", "DM-WALL-PUTTY-40KG", 12, "980.50", date(2026, 3, 2)),
    ("B000000003", "P100", "DM-BLOCK-JOINT-40KG", 25, "1500.50", date(2026, 3, 3)),
    ("B000000004", "P300", "DM-TILE-ADH-20KG", 8, "304.00", date(2026, 3, 4)),
    ("B000000005", "P100", "DM-PLASTER-25KG", 60, "2100.75", date(2026, 3, 5)),
    ("B000000006", "P200", "DM-TILE-ADH-20KG", 33, "1254.00", date(2026, 3, 6)),
    ("B000000007", "P100", "DM-WALL-PUTTY-40KG", 5, "410.00", date(2026, 3, 7)),
    ("B000000008", "P200", "DM-BLOCK-JOINT-40KG", 21, "1260.00", date(2026, 3, 8)),
    ("B000000009", "P300", "DM-PLASTER-25KG", 70, "2450.00", date(2026, 3, 9)),
    ("B000000010", "P100", "DM-TILE-ADH-20KG", 22, "836.00", date(2026, 3, 10)),
)
NOW = datetime(2026, 3, 11, 9, 0, tzinfo=UTC)
BASIC = ("DRYMIX_INT", "sandbox-secret")
PARAMTYPE_CODE = "005056A509B11EE1BB8AF4A65EC3CA20"
_build_batch = row_builder(BATCH_TYPE, ("Batch", "Plant", "Material", "Quantity", "NetAmount", "ProductionDate", "ETag"))


class MixerSandbox(ODataSandbox):
    """The whole second service: data in, one write rule; the engine does the rest."""

    name = "mixer"

    def __init__(self, **options: Any) -> None:
        super().__init__(SERVICE, clock=lambda: NOW, **options)
        plants, batches = self.tables["Z_Plant"], self.tables["Z_Batch"]
        plant_at = {row[0]: plants.append(row) for row in PLANTS}
        children: dict[str, list[int]] = {code: [] for code in plant_at}
        for number, plant, material, quantity, amount, day in BATCHES:
            index = batches.append(_build_batch(number, plant, material, quantity, amount, wire_date(day), make_etag(NOW, 0)))
            batches.links["to_Plant"][index] = plant_at[plant]
            children[plant].append(index)
        for code, indices in children.items():
            plants.links["to_Batch"][plant_at[code]] = tuple(indices)

    def on_update(self, table: Table, index: int, row: list[Any], changes: Mapping[str, Any], user: str) -> None:
        if "Quantity" in changes and (changes["Quantity"] is None or changes["Quantity"] <= 0):
            raise bad_request("Quantity must be a positive number of bags")
        super().on_update(table, index, row, changes, user)


# -- both ways of talking to it ----------------------------------------------------------------

Connect = Callable[[ODataSandbox], AbstractContextManager[httpx.Client]]


@contextmanager
def _in_process(sandbox: ODataSandbox) -> Iterator[httpx.Client]:
    with httpx.Client(transport=as_transport(sandbox), base_url="http://mixer.test", auth=BASIC) as client:
        yield client


@contextmanager
def _real_http(sandbox: ODataSandbox) -> Iterator[httpx.Client]:
    with running_server(sandbox) as base_url, httpx.Client(base_url=base_url, auth=BASIC) as client:
        yield client


@pytest.fixture(params=[_in_process, _real_http], ids=["in_process", "real_http"])
def connect(request: pytest.FixtureRequest) -> Connect:
    connector: Connect = request.param
    return connector


J = {"Accept": "application/json"}


def rows(resp: httpx.Response) -> list[dict[str, Any]]:
    assert resp.status_code == 200, resp.text
    found: list[dict[str, Any]] = resp.json()["d"]["results"]
    return found


def batch_ids(resp: httpx.Response) -> list[str]:
    return [r["Batch"] for r in rows(resp)]


# -- tests -------------------------------------------------------------------------------------


def test_metadata_describes_exactly_the_declared_types_sets_and_navigations(connect: Connect) -> None:
    with connect(MixerSandbox()) as client:
        resp = client.get(f"{ROOT}$metadata")
        service_doc = client.get(ROOT, headers=J)
    assert resp.status_code == 200 and resp.headers["content-type"].startswith("application/xml")
    assert resp.headers["dataserviceversion"] == "2.0"
    ns = {
        "edmx": "http://schemas.microsoft.com/ado/2007/06/edmx",
        "m": "http://schemas.microsoft.com/ado/2007/08/dataservices/metadata",
        "edm": "http://schemas.microsoft.com/ado/2008/09/edm",
        "sap": "http://www.sap.com/Protocols/SAPData",
    }
    services = ET.fromstring(resp.content).find("edmx:DataServices", ns)
    assert services is not None and services.get(f"{{{ns['m']}}}DataServiceVersion") == "2.0"
    schema = services.find("edm:Schema", ns)
    assert schema is not None and schema.get("Namespace") == "ZMIXER_SRV"
    types = {t.get("Name"): t for t in schema.findall("edm:EntityType", ns)}
    assert set(types) == {"Z_PlantType", "Z_BatchType"}
    batch = types["Z_BatchType"]
    assert [r.get("Name") for r in batch.findall("edm:Key/edm:PropertyRef", ns)] == ["Batch"]
    kinds = {p.get("Name"): p.get("Type") for p in batch.findall("edm:Property", ns)}
    assert kinds == {
        "Batch": "Edm.String",
        "Plant": "Edm.String",
        "Material": "Edm.String",
        "Quantity": "Edm.Int32",
        "NetAmount": "Edm.Decimal",
        "ProductionDate": "Edm.DateTime",
        "ETag": "Edm.String",
    }
    plant_nav = types["Z_PlantType"].find("edm:NavigationProperty", ns)
    assert plant_nav is not None and plant_nav.get("Name") == "to_Batch"
    ends = {
        a.get("Name"): [e.get("Multiplicity") for e in a.findall("edm:End", ns)]
        for a in schema.findall("edm:Association", ns)
    }
    assert ends == {"assoc_Z_Plant_to_Batch": ["1", "*"], "assoc_Z_Batch_to_Plant": ["1", "0..1"]}
    sets = {
        s.get("Name"): s.get(f"{{{ns['sap']}}}updatable")
        for s in schema.findall("edm:EntityContainer/edm:EntitySet", ns)
    }
    assert sets == {"Z_Plant": "false", "Z_Batch": "true"}
    assert service_doc.json() == {"d": {"EntitySets": ["Z_Batch", "Z_Plant"]}}


def test_filter_is_typed_by_the_declarations_including_numbers_and_navigation_paths(connect: Connect) -> None:
    with connect(MixerSandbox()) as client:

        def matching(expression: str) -> list[str]:
            return batch_ids(client.get(f"{ROOT}Z_Batch", params={"$filter": expression}, headers=J))

        assert matching("Quantity gt 20 and to_Plant/CityName eq 'Pune'") == [
            b[0] for b in BATCHES if b[3] > 20 and b[1] == "P100"
        ]
        assert matching("NetAmount ge 1500.50m") == [b[0] for b in BATCHES if Decimal(b[4]) >= Decimal("1500.50")]
        assert matching("ProductionDate ge datetime'2026-03-08T00:00:00' and not to_Plant/IsActive") == [
            "B000000009"
        ]
        assert matching("startswith(Material,'DM-TILE') and Quantity le 22") == ["B000000004", "B000000010"]
        wrong_type = client.get(f"{ROOT}Z_Batch", params={"$filter": "Quantity eq 'forty'"}, headers=J)
    assert wrong_type.status_code == 400
    assert wrong_type.json()["error"]["code"] == PARAMTYPE_CODE
    assert wrong_type.json()["error"]["message"]["value"] == "Invalid parametertype used at function 'eq' (Position: 10)"


def test_select_and_expand_shape_entities_in_both_directions(connect: Connect) -> None:
    with connect(MixerSandbox()) as client:
        plant = client.get(
            f"{ROOT}Z_Plant('P200')",
            params={"$select": "PlantName,to_Batch/Batch,to_Batch/Quantity", "$expand": "to_Batch"},
            headers=J,
        )
        batches = client.get(
            f"{ROOT}Z_Batch", params={"$top": "2", "$select": "Batch,to_Plant/CityName", "$expand": "to_Plant"}, headers=J
        )
        deferred = client.get(f"{ROOT}Z_Batch('B000000004')", headers=J)
    assert plant.status_code == 200, plant.text
    body = plant.json()["d"]
    base = str(plant.request.url).split(ROOT)[0] + ROOT
    assert body["__metadata"] == {"id": f"{base}Z_Plant('P200')", "uri": f"{base}Z_Plant('P200')", "type": "ZMIXER_SRV.Z_PlantType"}
    assert body["PlantName"] == "Chennai Mixer" and "CityName" not in body
    assert [(b["Batch"], b["Quantity"]) for b in body["to_Batch"]["results"]] == [
        (b[0], b[3]) for b in BATCHES if b[1] == "P200"
    ]
    assert set(body["to_Batch"]["results"][0]) == {"__metadata", "Batch", "Quantity"}
    assert [(b["Batch"], b["to_Plant"]["CityName"]) for b in rows(batches)] == [
        ("B000000001", "Pune"),
        ("B000000002", "Chennai"),
    ]
    single = deferred.json()["d"]
    assert single["to_Plant"] == {"__deferred": {"uri": f"{base}Z_Batch('B000000004')/to_Plant"}}
    assert single["NetAmount"] == "304.00" and single["ProductionDate"] == "/Date(1772582400000)/"
    assert single["__metadata"]["etag"] == deferred.headers["etag"] == "W/\"'202603110900000000000'\""


def test_count_is_plain_text_whatever_the_accept_header(connect: Connect) -> None:
    with connect(MixerSandbox()) as client:
        everything = client.get(f"{ROOT}Z_Batch/$count", headers=J)
        filtered = client.get(f"{ROOT}Z_Batch/$count", params={"$filter": "Plant eq 'P100'"}, headers=J)
        below = client.get(f"{ROOT}Z_Plant('P300')/to_Batch/$count", headers=J)
        inline = client.get(f"{ROOT}Z_Batch", params={"$inlinecount": "allpages", "$top": "1"}, headers=J)
    assert everything.headers["content-type"].startswith("text/plain")
    assert (everything.text, filtered.text, below.text) == ("10", "5", "2")
    assert inline.json()["d"]["__count"] == "10" and len(rows(inline)) == 1


def test_keyset_and_server_driven_paging_read_every_row_once(connect: Connect) -> None:
    every = [b[0] for b in BATCHES]
    with connect(MixerSandbox(max_page_size=3)) as client:
        keyset: list[str] = []
        pages = 0
        while True:
            last = f" and Batch gt '{keyset[-1]}'" if keyset else ""
            page = batch_ids(
                client.get(
                    f"{ROOT}Z_Batch",
                    params={"$filter": f"Quantity gt 0{last}", "$orderby": "Batch", "$top": "3"},
                    headers=J,
                )
            )
            if not page:
                break
            keyset += page
            pages += 1
        followed: list[str] = []
        url: str | None = f"{ROOT}Z_Batch"
        sizes = []
        while url:
            page_body = client.get(url, headers=J).json()["d"]
            followed += [r["Batch"] for r in page_body["results"]]
            sizes.append(len(page_body["results"]))
            url = page_body.get("__next")
    assert keyset == every and pages == 4
    assert followed == every and sizes == [3, 3, 3, 1]


def test_updates_need_the_csrf_token_and_the_current_etag(connect: Connect) -> None:
    sandbox = MixerSandbox()
    target = f"{ROOT}Z_Batch('B000000003')"
    with connect(sandbox) as client:
        without_token = client.patch(target, json={"Quantity": 26}, headers=J)
        fetched = client.get(ROOT, headers={**J, "X-CSRF-Token": "Fetch"})
        token = fetched.headers["x-csrf-token"]
        write = {**J, "X-CSRF-Token": token}
        old_etag = client.get(target, headers=J).headers["etag"]
        no_if_match = client.patch(target, json={"Quantity": 26}, headers=write)
        stale = client.patch(target, json={"Quantity": 26}, headers={**write, "If-Match": 'W/"\'19990101000000000001\'"'})
        refused = client.patch(target, json={"Quantity": 0}, headers={**write, "If-Match": old_etag})
        done = client.patch(target, json={"Quantity": 26, "NetAmount": "1560.52"}, headers={**write, "If-Match": old_etag})
        after = client.get(target, headers=J)
        again = client.request("MERGE", target, json={"Quantity": 27}, headers={**write, "If-Match": old_etag})
        on_plant = client.patch(f"{ROOT}Z_Plant('P100')", json={"PlantName": "x"}, headers={**write, "If-Match": "*"})
    assert without_token.status_code == 403
    assert without_token.headers["x-csrf-token"] == "Required" and without_token.text == "CSRF token validation failed"
    assert fetched.status_code == 200 and any(c.startswith("SAP_SESSIONID_S4H_100=") for c in fetched.headers.get_list("set-cookie"))
    assert no_if_match.status_code == 428
    assert stale.status_code == 412
    assert refused.status_code == 400
    assert refused.json()["error"]["message"]["value"] == "Quantity must be a positive number of bags"
    assert done.status_code == 204 and done.headers["etag"] != old_etag
    assert after.headers["etag"] == done.headers["etag"] == "W/\"'202603110900000000001'\""
    assert (after.json()["d"]["Quantity"], after.json()["d"]["NetAmount"]) == (26, "1560.52")
    assert again.status_code == 412
    assert on_plant.status_code == 405
    assert sandbox.data_version == 1


def test_errors_come_in_sap_gateways_envelope_naming_the_service(connect: Connect) -> None:
    with connect(MixerSandbox()) as client:
        unknown = client.get(f"{ROOT}Z_Batch", params={"$filter": "Colour eq 'grey'"}, headers=J)
        missing = client.get(f"{ROOT}Z_Batch('B404')", headers=J)
        as_xml = client.get(f"{ROOT}Z_Batch('B404')")
    assert unknown.status_code == 400 and unknown.headers["content-type"].startswith("application/json")
    error = unknown.json()["error"]
    assert error["code"] == "/IWBEP/CM_MGW_RT/022"
    assert error["message"] == {"lang": "en", "value": "Property 'Colour' is invalid in $filter (Position: 1)"}
    inner = error["innererror"]
    assert inner["application"] == {
        "component_id": "PP-SFC",
        "service_namespace": "/SAP/",
        "service_id": "ZMIXER_SRV",
        "service_version": "0001",
    }
    assert len(inner["transactionid"]) == 32 and inner["timestamp"].startswith("20260311090000.")
    assert inner["errordetails"] == [
        {"code": error["code"], "message": error["message"]["value"], "propertyref": "", "severity": "error", "target": ""}
    ]
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "/IWBEP/CM_MGW_RT/020"
    # Not asking for JSON: 406 (the engine serves JSON only), in the V2 XML error format.
    assert as_xml.status_code == 406 and as_xml.headers["content-type"].startswith("application/xml")
    assert ET.fromstring(as_xml.content).find("{http://schemas.microsoft.com/ado/2007/08/dataservices/metadata}code") is not None


def test_declarations_the_engine_cannot_serve_are_refused_up_front() -> None:
    with pytest.raises(ValueError, match="Edm.Double"):
        EntityType("T", "Ts", (string_prop("Id", 4, key=True), Prop("Weight", "Edm.Double")), ("Id",))
    with pytest.raises(ValueError, match="keys"):
        EntityType("T", "Ts", (string_prop("Id", 4, key=True),), ("Nope",))
    with pytest.raises(ValueError, match="unknown target"):
        ODataService("S", "/s/", "S", (EntityType("T", "Ts", (string_prop("Id", 4, key=True),), ("Id",), (Nav("to_X", "Xs", False),)),))


def test_the_engine_clock_and_token_control_routes_work_for_any_service() -> None:
    sandbox = MixerSandbox(csrf_ttl_s=60)
    with httpx.Client(transport=as_transport(sandbox), base_url="http://mixer.test", auth=BASIC) as client:
        token = client.get(ROOT, headers={**J, "X-CSRF-Token": "Fetch"}).headers["x-csrf-token"]
        moved = client.post("/_sandbox/mixer/clock", json={"advance_s": 120})
        expired = client.patch(
            f"{ROOT}Z_Batch('B000000001')", json={"Quantity": 41}, headers={**J, "X-CSRF-Token": token, "If-Match": "*"}
        )
        info = client.get("/_sandbox/mixer/info").json()
    assert moved.json() == {"now": (NOW + timedelta(seconds=120)).isoformat()}
    assert expired.status_code == 403
    assert info["service"] == "ZMIXER_SRV" and info["entities"] == {"Z_Plant": 3, "Z_Batch": 10}
