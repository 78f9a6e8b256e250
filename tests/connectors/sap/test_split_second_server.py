"""`SapConnector.split` and keyset paging against a second, differently shaped OData V2 server (not our simulator).

Written here from the contract (../shared/reference/api-contracts.md, OData V2 JSON verbose), it differs from
sandbox/sap.py where the contract leaves room:
- keys are unpadded numbers as strings, so their string order is not their numeric order ("10" < "9");
- the server pages on its own: at most 7 records a page whatever `$top` asks, with `d.__next` and an offset
  `$skiptoken` (the connector must not follow it: offsets skip rows when data changes);
- it ignores `$select` and `$expand`: every record carries `__metadata` and its navigation properties deferred;
- `$count` answers text; an unknown `$filter` clause is a 400 with an OData error body.
"""

from __future__ import annotations

import random
import re
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import httpx
import orjson
import pytest

from connectors.core.paging import query_of
from hub.runtime.connections import build_sap_connector
from hub.systems.sap import CUSTOMERS

PARTNERS = CUSTOMERS.stream
PAGE_CAP = 7
_CLAUSE = re.compile(r"^BusinessPartner (ge|gt|lt) '((?:[^']|'')*)'$")


class SecondServer:
    """A small OData V2 service of business partners, kept in a dict by key."""

    def __init__(self, keys: list[str]) -> None:
        self.partners = {k: self._partner(k) for k in keys}
        self.requests: list[str] = []
        self.page_sizes: list[int] = []

    @staticmethod
    def _partner(key: str) -> dict[str, Any]:
        uri = f"https://second.example/sap/opu/odata/sap/API_BUSINESS_PARTNER/A_BusinessPartner('{key}')"
        return {
            "__metadata": {"id": uri, "uri": uri, "type": "API_BUSINESS_PARTNER.A_BusinessPartnerType"},
            "BusinessPartner": key,
            "BusinessPartnerCategory": "2",
            "OrganizationBPName1": f"Partner {key}",
            "to_BusinessPartnerAddress": {"__deferred": {"uri": f"{uri}/to_BusinessPartnerAddress"}},
            "to_Customer": {"__deferred": {"uri": f"{uri}/to_Customer"}},
        }

    def handle(self, request: httpx.Request) -> httpx.Response:
        url = urlsplit(str(request.url))
        query = dict(parse_qsl(url.query, keep_blank_values=True))
        self.requests.append(f"{url.path}?{url.query}")
        try:
            keep = self._filter(query.get("$filter", ""))
        except ValueError as exc:
            return httpx.Response(400, json={"error": {"code": "/IWBEP/CM_MGW_RT/022", "message": {"lang": "en", "value": str(exc)}}})
        keys = sorted(k for k in self.partners if keep(k))  # string order, as the key is an Edm.String
        if url.path.endswith("/$count"):
            return httpx.Response(200, text=str(len(keys)), headers={"content-type": "text/plain"})
        if query.get("$orderby", "BusinessPartner asc") not in ("BusinessPartner asc", "BusinessPartner"):
            return httpx.Response(400, json={"error": {"code": "ORDERBY", "message": {"lang": "en", "value": "unsupported $orderby"}}})
        offset = int(query.get("$skiptoken") or 0) + int(query.get("$skip") or 0)
        top = int(query["$top"]) if "$top" in query else len(keys)
        window = keys[offset : offset + min(top, PAGE_CAP)]
        body: dict[str, Any] = {"results": [self.partners[k] for k in window]}
        self.page_sizes.append(len(window))
        if offset + len(window) < min(len(keys), offset + top):
            body["__next"] = f"https://second.example{url.path}?$skiptoken={offset + len(window)}"
        return httpx.Response(200, content=orjson.dumps({"d": body}), headers={"content-type": "application/json"})

    @staticmethod
    def _filter(text: str) -> Any:
        tests = []
        for clause in (c.strip().strip("()").strip() for c in re.split(r"\band\b", text) if c.strip()):
            match = _CLAUSE.match(clause)
            if match is None:
                raise ValueError(f"Invalid filter clause: {clause}")
            op, value = match.group(1), match.group(2).replace("''", "'")
            tests.append({"ge": lambda k, v=value: k >= v, "gt": lambda k, v=value: k > v, "lt": lambda k, v=value: k < v}[op])
        return lambda key: all(t(key) for t in tests)


def _keys(n: int, seed: int) -> list[str]:
    return [str(k) for k in random.Random(seed).sample(range(1, 5_000_000), n)]


def _read(sap: Any, start: Any) -> list[str]:
    return [r["BusinessPartner"] for page in sap.sync(PARTNERS, start=start) for r in page.records]


@pytest.mark.parametrize("partitions", [2, 3, 5])
def test_split_covers_every_partner_once_on_a_server_that_pages_on_its_own_and_orders_keys_as_strings(partitions: int) -> None:
    server = SecondServer(_keys(400, seed=partitions))
    with build_sap_connector(transport=httpx.MockTransport(server.handle), page_size=50) as sap:
        position = sap.start(PARTNERS, None)
        starts = sap.split(PARTNERS, position, partitions)
        assert len(starts) == partitions
        ranges = [_read(sap, start) for start in starts]
        counted = [sap.count(PARTNERS, start) for start in starts]
    assert counted == [len(r) for r in ranges]
    assert sorted(k for r in ranges for k in r) == sorted(server.partners), "every key once"
    assert all(max(a) < min(b) for a, b in zip(ranges, ranges[1:], strict=False)), "ranges are ordered and disjoint"
    assert min(len(r) for r in ranges) >= 400 // partitions - PAGE_CAP, "the ranges are of similar size"
    assert not any("$skiptoken" in r for r in server.requests), "the server's offset links were not followed"
    assert max(server.page_sizes) == PAGE_CAP, "the server cut the connector's 50-record pages to its own size"


def test_a_split_read_finds_every_partner_that_existed_throughout_while_partners_come_and_go() -> None:
    keys = _keys(300, seed=11)
    server = SecondServer(keys)
    with build_sap_connector(transport=httpx.MockTransport(server.handle), page_size=20) as sap:
        starts = sap.split(PARTNERS, sap.start(PARTNERS, None), 3)
        # Between the split and the reads: partners created in every range and some deleted.
        removed = set(random.Random(3).sample(keys, 30))
        for key in removed:
            del server.partners[key]
        added = {str(k) for k in random.Random(4).sample(range(5_000_000, 9_999_999), 30)}
        server.partners.update({k: SecondServer._partner(k) for k in added})
        ranges = [_read(sap, start) for start in starts]
    read = [k for r in ranges for k in r]
    assert len(read) == len(set(read)), "no partner read twice"
    assert set(keys) - removed <= set(read), "every partner that existed throughout was read"
    assert set(read) <= set(keys) | added
    assert all("BusinessPartner" in query_of(start.url)["$filter"] for start in starts[1:])


def test_a_filter_the_server_cannot_read_is_a_classified_invalid_request() -> None:
    from connectors.core.errors import InvalidRequest

    server = SecondServer(_keys(20, seed=1))
    with build_sap_connector(transport=httpx.MockTransport(server.handle), page_size=10) as sap:
        position = sap.start(PARTNERS, {"last_change_date": "2026-01-01"})  # LastChangeDate: not this server's
        with pytest.raises(InvalidRequest) as refused:
            sap.split(PARTNERS, position, 2)
    # The server's own error code and message, not a bare status: on-call reads what SAP said.
    assert refused.value.code == "/IWBEP/CM_MGW_RT/022"
    assert "Invalid filter clause: LastChangeDate ge datetime'" in str(refused.value)
