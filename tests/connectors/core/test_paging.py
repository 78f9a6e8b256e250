from __future__ import annotations

from connectors.core.paging import NextLinkPaginator, ODataV2Paginator, PagePosition, query_of, with_query


def test_follows_server_next_link_within_the_window() -> None:
    p = ODataV2Paginator()
    start = p.start("A_BusinessPartner?$top=3000&$skip=0")
    nxt = p.next_position(start, {"d": {"results": [], "__next": "http://h/A?$skiptoken=1000"}}, [{}] * 1000)
    assert nxt == PagePosition("http://h/A?$skiptoken=1000", {"window": start.url, "seen": 1000})


def test_opens_next_window_with_skip_when_window_came_back_full() -> None:
    p = ODataV2Paginator()
    pos = PagePosition("http://h/A?$skiptoken=2000", {"window": "A?$top=3000&$skip=0", "seen": 2000})
    nxt = p.next_position(pos, {"d": {"results": []}}, [{}] * 1000)
    assert nxt is not None
    assert query_of(nxt.url)["$skip"] == "3000"
    assert nxt.state == {"window": nxt.url, "seen": 0}


def test_short_window_is_the_end() -> None:
    p = ODataV2Paginator()
    start = p.start("A?$top=1000&$skip=0")
    assert p.next_position(start, {"d": {"results": []}}, [{}] * 999) is None


def test_without_top_and_without_next_link_there_is_one_page() -> None:
    p = ODataV2Paginator()
    assert p.next_position(p.start("A"), {"d": {"results": []}}, [{}] * 5) is None


def test_position_round_trips_through_json_dict() -> None:
    pos = PagePosition("A?$skip=10", {"window": "A", "seen": 3})
    assert PagePosition.from_dict(pos.to_dict()) == pos


def test_with_query_keeps_odata_literals_readable() -> None:
    url = with_query("A_BusinessPartner", **{"$filter": "LastChangeDate ge datetime'2024-01-01T00:00:00'", "$top": 5})
    assert "$filter=LastChangeDate%20ge%20datetime'2024-01-01T00:00:00'" in url
    assert query_of(url)["$top"] == "5"


def test_next_link_paginator() -> None:
    p = NextLinkPaginator(("@odata.nextLink",))
    assert p.next_position(p.start("x"), {"@odata.nextLink": "y"}, []) == PagePosition("y")
    assert p.next_position(p.start("x"), {}, []) is None


def test_count_skip_paginator_moves_skip_by_count_until_a_short_page() -> None:
    from connectors.core.paging import CountSkipPaginator

    paginator = CountSkipPaginator()
    start = paginator.start("payments?from=10&to=20&count=2&skip=0")
    second = paginator.next_position(start, {}, [{"id": "a"}, {"id": "b"}])
    assert second is not None and query_of(second.url) == {"from": "10", "to": "20", "count": "2", "skip": "2"}
    assert paginator.next_position(second, {}, [{"id": "c"}]) is None
    assert paginator.next_position(paginator.start("payments"), {}, [{"id": str(i)} for i in range(9)]) is None
