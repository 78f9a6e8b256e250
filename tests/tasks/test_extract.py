"""The extract task's pieces: pages mapped as they arrive, exact duplicates dropped from the mapped batch, compact read keys."""

from __future__ import annotations

from typing import Any, cast

import orjson
import pandas as pd
import pytest

from connectors.core.base import Connector, Stream
from connectors.core.paging import Page, PagePosition
from tasks.extract import ReadKeys, drop_mapped_duplicates, read_batch


class _FixedPages:
    """Fixed pages behind the one call the extract makes of a connector (fetch_page)."""

    def __init__(self, pages: list[list[dict[str, Any]]]) -> None:
        self.pages = pages

    def fetch_page(self, stream: Stream, position: PagePosition) -> Page:
        n = int(position.url)
        following = PagePosition(str(n + 1)) if n + 1 < len(self.pages) else None
        return Page(position=position, records=self.pages[n], next=following)


STREAM = Stream(name="things", path="things", primary_key="id")


def _Pages(pages: list[list[dict[str, Any]]]) -> Connector:
    return cast(Connector, _FixedPages(pages))


def one_row_each(records: list[dict[str, Any]]) -> pd.DataFrame:
    return pd.DataFrame({"thing": [r["id"] for r in records], "size": [r.get("size") for r in records]})


def two_rows_each(records: list[dict[str, Any]]) -> pd.DataFrame:
    rows = [{"record": i, "thing": r["id"], "line": line} for i, r in enumerate(records) for line in (1, 2)]
    return pd.DataFrame(rows, columns=["record", "thing", "line"])


def test_pages_are_mapped_as_they_arrive_and_placed_by_record_position() -> None:
    pages = [[{"id": "a", "size": 1}, {"id": "b", "size": 2}], [{"id": "c", "size": 3}]]
    batch = read_batch(_Pages(pages), STREAM, PagePosition("0"), 5, one_row_each)
    assert batch.read == 3 and batch.pages == 2 and batch.records == []
    assert batch.frame is not None and list(batch.frame.index) == [0, 1, 2] and list(batch.frame["thing"]) == ["a", "b", "c"]
    assert batch.keys == ["a", "b", "c"]
    assert batch.source_record(2) == {"id": "c", "size": 3}
    assert batch.raw[0] == orjson.dumps({"id": "a", "size": 1})

    grouped = read_batch(_Pages(pages), STREAM, PagePosition("0"), 5, two_rows_each, "record")
    assert grouped.frame is not None and list(grouped.frame["record"]) == [0, 0, 1, 1, 2, 2]
    assert grouped.frame.index.is_unique

    assert [batch.raw[i] for i in range(3)] == [orjson.dumps(r) for page in pages for r in page]

    batch.release()
    assert batch.frame is None and len(batch.raw) == 0 and batch.keys == []


def test_a_record_served_twice_to_the_letter_is_dropped_once_and_a_different_one_with_its_key_is_kept() -> None:
    pages = [[{"id": "a", "size": 1}, {"size": 1, "id": "a"}], [{"id": "a", "size": 2}, {"id": "b", "size": 1}]]
    batch = read_batch(_Pages(pages), STREAM, PagePosition("0"), 5, one_row_each)
    assert drop_mapped_duplicates(batch) == 1  # the same record, its keys in another order
    assert batch.frame is not None and list(batch.frame.index) == [0, 2, 3]

    grouped = read_batch(_Pages(pages), STREAM, PagePosition("0"), 5, two_rows_each, "record")
    assert drop_mapped_duplicates(grouped, "record") == 1
    assert grouped.frame is not None and sorted(set(grouped.frame["record"])) == [0, 2, 3] and len(grouped.frame) == 6


def test_read_keys_count_distinct_keys_across_batches() -> None:
    keys = ReadKeys()
    keys.add(["b", "a", None, "a"])
    keys.add(["c", "b", "é"])
    assert len(keys) == 4
    assert keys.as_frozenset() == {"a", "b", "c", "é"}
    assert keys.array().tolist() == sorted(k.encode() for k in ("a", "b", "c", "é"))


def test_read_keys_met_in_key_order_are_counted_without_merging_and_a_part_out_of_order_is_merged() -> None:
    keys = ReadKeys()
    for batch in range(3):  # a read paged by key: each batch's keys after the last batch's
        keys.add(f"{n:06d}" for n in range(batch * 100 + 99, batch * 100 - 1, -1))
    parts = list(keys._parts)
    assert len(keys) == 300 and keys._parts == parts, "counted by the parts' sizes, nothing merged"
    assert keys.as_frozenset() == {f"{n:06d}" for n in range(300)}
    keys.add(["000150", "000400"])  # served again (a record changed and moved), and one new
    assert len(keys) == 301 and len(keys._parts) == 1
    assert keys.array().tolist() == [f"{n:06d}".encode() for n in [*range(300), 400]]


def test_the_next_page_is_fetched_while_this_one_is_mapped_one_request_at_a_time_in_order() -> None:
    import threading

    pages = [[{"id": f"{p}-{i}"} for i in range(3)] for p in range(4)]
    fetching = [threading.Event() for _ in pages]
    in_flight: list[int] = []
    fetched: list[int] = []

    class SlowSource(_FixedPages):
        def fetch_page(self, stream: Stream, position: PagePosition) -> Page:
            n = int(position.url)
            in_flight.append(n)
            assert len(in_flight) == 1, "one request at a time"
            fetching[n].set()
            fetched.append(n)
            in_flight.pop()
            return super().fetch_page(stream, position)

    overlapped: list[bool] = []

    def mapper(records: list[dict[str, Any]]) -> pd.DataFrame:
        page = int(records[0]["id"].split("-")[0])
        if page + 1 < 3:  # the batch holds 3 pages: pages 1 and 2 are asked for while 0 and 1 are mapped
            overlapped.append(fetching[page + 1].wait(timeout=10))
        return one_row_each(records)

    batch = read_batch(cast(Connector, SlowSource(pages)), STREAM, PagePosition("0"), 3, mapper)
    assert overlapped == [True, True]
    assert fetched == [0, 1, 2], "in order, and not past the batch's last page"
    assert batch.pages == 3 and batch.read == 9 and batch.next == PagePosition("3")
    assert batch.frame is not None and list(batch.frame["thing"]) == [r["id"] for page in pages[:3] for r in page]


def test_a_failed_fetch_of_the_next_page_fails_the_batch_after_this_page_was_mapped() -> None:
    class FailingSource(_FixedPages):
        def fetch_page(self, stream: Stream, position: PagePosition) -> Page:
            if position.url == "1":
                raise ConnectionError("the source hung up")
            return super().fetch_page(stream, position)

    mapped: list[int] = []

    def mapper(records: list[dict[str, Any]]) -> pd.DataFrame:
        mapped.append(len(records))
        return one_row_each(records)

    with pytest.raises(ConnectionError, match="hung up"):
        read_batch(cast(Connector, FailingSource([[{"id": "a"}], [{"id": "b"}]])), STREAM, PagePosition("0"), 5, mapper)
    assert mapped == [1]


def test_source_records_read_again_after_the_open_page_is_closed() -> None:
    from tasks.extract import RawRecords

    raw = RawRecords()
    raw.add_page([{"id": "a", "n": 1}, {"id": "b", "n": 2}])
    raw.add_page([{"id": "c", "n": 3}])
    assert orjson.loads(raw[1]) == {"id": "b", "n": 2}
    raw.close_page()  # what the run does once a batch's refused records are read
    assert orjson.loads(raw[1]) == {"id": "b", "n": 2} and orjson.loads(raw[2]) == {"id": "c", "n": 3}
    assert len(raw) == 3
