"""The collect-plant flow end to end: a real asyncua plant sandbox, the durable buffer, the real database."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select

from connectors.core.errors import ErrorCategory, IntegrationError
from hub.db import get_engine
from hub.loading import read_cursor
from hub.models import IntegrationErrorRow, PlantReading, ProductionBatch, QuarantinedRecord
from hub.plant import BATCH, BATCH_SEQ_META, READING, open_buffer
from hub.settings import plant_opcua_config, reset_settings_cache
from sandbox.plant import BatchRecord, ThreadedPlant

pytestmark = pytest.mark.usefixtures("prefect_harness")

UNREACHABLE_DB = "postgresql+psycopg://postgres@127.0.0.1:1/nowhere"


@pytest.fixture
def plant(db: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[ThreadedPlant]:
    server = ThreadedPlant(mixers=3, speed=100.0, tick_s=0.05, ring_size=120, state_file=tmp_path / "plant_state.json")
    monkeypatch.setenv("PLANT_OPCUA_URL", server.url)
    monkeypatch.setenv("PLANT_OPCUA_BUFFER_DIR", str(tmp_path / "buffer"))
    reset_settings_cache()
    try:
        yield server
    finally:
        server.close()
        reset_settings_cache()


def run(**params: Any) -> dict[str, Any]:
    from flows.collect_plant import collect_plant

    return collect_plant(**params)


def wait_for_batches(plant: ThreadedPlant, count: int, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while plant.sim.batch_counter < count:
        assert time.monotonic() < deadline, "the plant sandbox produced no batches"
        time.sleep(0.05)


def loaded_seqs() -> list[int]:
    """Batch seqs in production_batches and in quarantine (each collected batch is in exactly one)."""
    with get_engine().connect() as conn:
        seqs = [int(s) for s in conn.execute(select(ProductionBatch.batch_seq)).scalars()]
        quarantined = conn.execute(
            select(QuarantinedRecord.raw_record).where(QuarantinedRecord.dataset == "production_batches")
        ).scalars()
        seqs += [int(raw["seq"]) for raw in quarantined]
    return sorted(seqs)


def count(model: Any) -> int:
    with get_engine().connect() as conn:
        return int(conn.execute(select(func.count()).select_from(model)).scalar_one())


def test_collects_readings_and_batches_quarantines_a_corrupt_record_and_continues_after_a_server_restart(plant: ThreadedPlant) -> None:
    wait_for_batches(plant, 3)
    corrupt = BatchRecord(
        seq=0, batch_id="M9-CORRUPT-1", product_code="TILE-ADH-C1", recipe_code="R-TA-C1", mixer="M9",
        started_at=datetime.now(UTC), ended_at=datetime.now(UTC), mixing_time_s=120.0,
        components=["Cement", "Sand"], target_kg=[350.0, 580.0], actual_kg=[-12.0, 581.0],
    )

    async def publish() -> None:
        corrupt.seq = plant.sim.batch_counter + 1
        await plant.sim.publish_batch(corrupt)

    plant.call(publish())
    first = run()
    assert first["watermark"] >= corrupt.seq
    assert loaded_seqs() == list(range(1, first["watermark"] + 1))
    assert first["quarantined"] == 1 and first["readings_read"] > 0 and first["buffer_pending"] == 0
    with get_engine().connect() as conn:
        assert read_cursor(conn, "plant_opcua", "production_batches") == {"batch_seq": first["watermark"]}
        quarantined = conn.execute(select(QuarantinedRecord.record_key, QuarantinedRecord.failed_expectations)).one()
        refused = conn.execute(
            select(IntegrationErrorRow.id).where(IntegrationErrorRow.error_type == ErrorCategory.DATA_VALIDATION_FAILED.value)
        ).all()
    assert quarantined.record_key == "M9-CORRUPT-1"
    assert quarantined.failed_expectations[0]["rule_id"] == "production_batches.actual_kg.non_negative"
    assert len(refused) == 1
    assert count(PlantReading) >= first["readings_read"] - first["duplicates"] - 1

    # The OPC UA server restarts; batches completed just before it are still collected, none twice.
    wait_for_batches(plant, first["watermark"] + 2)
    plant.restart()
    wait_for_batches(plant, plant.sim.batch_counter + 2)
    second = run()
    assert second["since"] == first["watermark"]
    assert loaded_seqs() == list(range(1, second["watermark"] + 1))
    third = run(listen_seconds=1.0)  # change-driven: a subscription window on the continuous tags
    assert third["subscribed_changes"] > 0
    assert loaded_seqs() == list(range(1, third["watermark"] + 1))
    with get_engine().connect() as conn:
        ids = list(conn.execute(select(ProductionBatch.batch_id)).scalars())
    assert len(ids) == len(set(ids))


def test_database_down_during_collection_then_back_loses_and_duplicates_nothing(
    plant: ThreadedPlant, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_db = os.environ["DATABASE_URL"]
    wait_for_batches(plant, 3)
    monkeypatch.setenv("DATABASE_URL", UNREACHABLE_DB)
    reset_settings_cache()
    with pytest.raises(IntegrationError) as down:
        run()
    assert down.value.category == ErrorCategory.SERVER_ERROR and down.value.code == "DATABASE_UNAVAILABLE"
    assert "stay in the local buffer" in down.value.message
    buffer = open_buffer(plant_opcua_config())
    after_first = buffer.counts_by_kind()
    assert after_first.get(READING, 0) > 0 and after_first.get(BATCH, 0) >= 3
    first_seq = buffer.get_meta(BATCH_SEQ_META)

    # Still down one minute later: the next run continues after what the buffer holds.
    wait_for_batches(plant, first_seq + 2)
    with pytest.raises(IntegrationError):
        run()
    pending = buffer.pending(100_000)
    buffered_seqs = [e.payload["seq"] for e in pending if e.kind == BATCH]
    assert buffered_seqs == list(range(1, buffered_seqs[-1] + 1)), "buffered in order, none twice, none skipped"
    assert buffered_seqs[-1] == buffer.get_meta(BATCH_SEQ_META) > first_seq
    buffered_readings = sum(1 for e in pending if e.kind == READING)
    assert buffered_readings > after_first[READING]

    # The database is back: everything buffered loads, in order, once.
    monkeypatch.setenv("DATABASE_URL", real_db)
    reset_settings_cache()
    back = run()
    assert back["buffer_pending"] == 0 and buffer.count() == 0
    assert back["extracted"] >= len(pending)
    seqs = loaded_seqs()
    assert seqs == list(range(1, back["watermark"] + 1))
    assert set(buffered_seqs) <= set(seqs)
    assert count(QuarantinedRecord) == 0
    readings_after = count(PlantReading)
    again = run()
    assert loaded_seqs() == list(range(1, again["watermark"] + 1))
    assert count(PlantReading) >= readings_after
    with get_engine().connect() as conn:
        keys = list(conn.execute(select(PlantReading.reading_key)).scalars())
    assert len(keys) == len(set(keys))


def test_plant_unreachable_still_flushes_the_buffer_and_records_the_failure(
    plant: ThreadedPlant, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_db = os.environ["DATABASE_URL"]
    wait_for_batches(plant, 2)
    monkeypatch.setenv("DATABASE_URL", UNREACHABLE_DB)
    reset_settings_cache()
    with pytest.raises(IntegrationError):
        run()
    buffered = open_buffer(plant_opcua_config()).count()
    assert buffered > 0
    monkeypatch.setenv("DATABASE_URL", real_db)
    reset_settings_cache()
    plant.stop()  # the OPC UA server is away now
    with pytest.raises(IntegrationError) as away:
        run()
    assert away.value.category == ErrorCategory.SERVER_ERROR and away.value.code == "CONNECT_ERROR"
    assert open_buffer(plant_opcua_config()).count() == 0  # what was buffered loaded anyway
    assert len(loaded_seqs()) >= 2
    with get_engine().connect() as conn:
        recorded = conn.execute(
            select(IntegrationErrorRow.error_type, IntegrationErrorRow.status).where(IntegrationErrorRow.integration == "plant_opcua")
        ).all()
    assert ("SERVER_ERROR", "pending") in [tuple(r) for r in recorded]
    plant.start()
    back = run()
    assert loaded_seqs() == list(range(1, back["watermark"] + 1))
    with get_engine().connect() as conn:
        open_errors = conn.execute(
            select(func.count()).select_from(IntegrationErrorRow).where(IntegrationErrorRow.status == "pending")
        ).scalar_one()
    assert open_errors == 0  # the successful run resolved the outage
