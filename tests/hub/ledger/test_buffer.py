"""The durable plant buffer and its flush: ordered, removed only after the commit, idempotent on replay."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import create_engine, func, select

from connectors.core.errors import classify_exception
from hub.core.db import get_engine
from hub.core.models import PlantReading, ProductionBatch, SyncState
from hub.ledger.buffer import DurableBuffer
from hub.ledger.loading import read_cursor
from hub.systems.plant import (
    BATCH,
    BATCH_SEQ_META,
    READING,
    PlantCollection,
    buffer_collection,
    flush_buffer,
    load_chunk,
    prepare_chunk,
    start_position,
)

UNREACHABLE = "postgresql+psycopg://postgres@127.0.0.1:1/nowhere"


def reading(tag: str, value: float, second: int) -> dict[str, Any]:
    stamp = (datetime(2026, 11, 30, 8, 0, tzinfo=UTC) + timedelta(seconds=second)).isoformat()
    return {
        "tag": tag, "node_id": f"ns=2;s=Plant.{tag.replace('/', '.')}", "unit": "A", "value": value,
        "status_code": 0, "status_name": "Good", "source_timestamp": stamp, "server_timestamp": stamp, "collected_at": stamp,
    }


def batch(seq: int) -> dict[str, Any]:
    start = datetime(2026, 11, 30, 8, 0, tzinfo=UTC) + timedelta(minutes=seq)
    return {
        "seq": seq, "batch_id": f"M1-261130-{seq:06d}-001", "product_code": "TILE-ADH-C1", "recipe_code": "R-TA-C1", "mixer": "M1",
        "started_at": start.isoformat(), "ended_at": (start + timedelta(seconds=190)).isoformat(), "mixing_time_s": 120.0,
        "components": ["Cement", "Sand"], "target_kg": [350.0, 580.0], "actual_kg": [351.0, 579.0], "bad_fields": {},
    }


def collection(seqs: range, readings: int = 5) -> PlantCollection:
    return PlantCollection(
        readings=[reading("Mixers/M1/MotorCurrentA", 80.0 + i, seqs.start * 100 + i) for i in range(readings)],
        batches=[batch(s) for s in seqs],
        counter=seqs.stop - 1,
    )


def counts() -> tuple[int, int]:
    with get_engine().connect() as conn:
        return (
            int(conn.execute(select(func.count()).select_from(PlantReading)).scalar_one()),
            int(conn.execute(select(func.count()).select_from(ProductionBatch)).scalar_one()),
        )


def test_buffer_keeps_entries_in_order_on_disk_until_removed(tmp_path: Path) -> None:
    path = tmp_path / "buffer.sqlite3"
    buffer = DurableBuffer(path)
    buffer.append([(READING, {"n": 1}), (BATCH, {"n": 2})], meta={"pos": 7})
    buffer.append([(READING, {"n": 3})])
    reopened = DurableBuffer(path)  # a new process after a crash sees the same entries
    assert [e.payload["n"] for e in reopened.pending(10)] == [1, 2, 3]
    assert reopened.get_meta("pos") == 7
    first = reopened.pending(2)
    reopened.remove_through(first[-1].seq)
    assert [e.payload["n"] for e in reopened.pending(10)] == [3]
    assert reopened.counts_by_kind() == {READING: 1}


def test_flush_loads_every_chunk_in_order_and_moves_the_cursor_forward(db: str, tmp_path: Path) -> None:
    buffer = DurableBuffer(tmp_path / "buffer.sqlite3")
    buffer_collection(buffer, collection(range(1, 8), readings=4))
    result = flush_buffer(buffer, get_engine(), stale_after_s=3600.0, chunk_size=3)
    assert result.chunks == 4 and buffer.count() == 0
    assert counts() == (4, 7)
    with get_engine().connect() as conn:
        assert read_cursor(conn, "plant_opcua", "production_batches") == {"batch_seq": 7}


def test_crash_between_commit_and_buffer_removal_duplicates_nothing(db: str, tmp_path: Path) -> None:
    buffer = DurableBuffer(tmp_path / "buffer.sqlite3")
    buffer_collection(buffer, collection(range(1, 6)))
    entries = buffer.pending(100)
    chunk = prepare_chunk(entries, stale_after_s=3600.0, run_name=None)
    load_chunk(get_engine(), chunk, flow_run_id=None)  # committed; the process dies before remove_through
    assert counts() == (5, 5)
    again = flush_buffer(buffer, get_engine(), stale_after_s=3600.0, chunk_size=100)
    assert again.readings_upserted == 0 and again.batches_upserted == 0
    assert again.readings_unchanged == 5 and again.batches_unchanged == 5
    assert counts() == (5, 5) and buffer.count() == 0


def test_database_outage_mid_flush_keeps_the_rest_in_the_buffer(db: str, tmp_path: Path) -> None:
    buffer = DurableBuffer(tmp_path / "buffer.sqlite3")
    buffer_collection(buffer, collection(range(1, 4), readings=3))
    down = create_engine(UNREACHABLE)
    with pytest.raises(Exception) as failure:
        flush_buffer(buffer, down, stale_after_s=3600.0, chunk_size=2)
    assert classify_exception(failure.value).code == "DATABASE_UNAVAILABLE"
    assert buffer.count() == 6 and counts() == (0, 0)
    position = start_position(down, buffer)
    assert not position.database_ok and position.after_seq == 3  # the buffer knows where collection stands
    buffer_collection(buffer, collection(range(4, 6), readings=2))
    flush_buffer(buffer, get_engine(), stale_after_s=3600.0, chunk_size=2)
    assert buffer.count() == 0
    with get_engine().connect() as conn:
        seqs = sorted(conn.execute(select(ProductionBatch.batch_seq)).scalars())
        assert conn.execute(select(func.count()).select_from(SyncState)).scalar_one() == 2
    assert seqs == [1, 2, 3, 4, 5]
    assert start_position(get_engine(), buffer).after_seq == 5
    assert buffer.get_meta(BATCH_SEQ_META) == 5


def test_the_cursor_never_goes_back_when_an_older_chunk_loads_later(db: str, tmp_path: Path) -> None:
    buffer = DurableBuffer(tmp_path / "buffer.sqlite3")
    buffer_collection(buffer, collection(range(5, 7), readings=1))
    flush_buffer(buffer, get_engine(), stale_after_s=3600.0, chunk_size=100)
    buffer_collection(buffer, collection(range(2, 4), readings=1))  # re-read after a server state loss
    flush_buffer(buffer, get_engine(), stale_after_s=3600.0, chunk_size=100)
    with get_engine().connect() as conn:
        assert read_cursor(conn, "plant_opcua", "production_batches") == {"batch_seq": 6}
