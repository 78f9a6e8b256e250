"""The collect-plant flow end to end: a real asyncua plant sandbox, the durable buffer, the real database."""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select

from connectors.core.errors import ErrorCategory, IntegrationError
from hub.core.db import get_engine
from hub.core.models import IntegrationErrorRow, PlantReading, ProductionBatch, QuarantinedRecord
from hub.core.settings import plant_opcua_config, reset_settings_cache
from hub.ledger.loading import read_cursor
from hub.systems.plant import BATCH, BATCH_SEQ_META, READING, open_buffer
from sandbox.plant import BatchRecord, ThreadedPlant
from tests.error_support import error_rows, make_due, refused_inserts, unit_of

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


def test_a_failed_flush_is_queued_and_its_rerun_loads_only_those_buffered_entries(plant: ThreadedPlant) -> None:
    from data_mappings.plant import map_plant_readings
    from hub.ledger.errors import get_error
    from hub.ledger.retry_units import rerun

    wait_for_batches(plant, 2)
    buffer = open_buffer(plant_opcua_config())
    with refused_inserts("production_batches", "production_batches is locked by a re-index"):
        with pytest.raises(IntegrationError) as failed:
            run()
        assert failed.value.category == ErrorCategory.SYNC_FAILED
        (first,) = error_rows("plant_opcua")
        unit = unit_of(first)
        assert unit["kind"] == "plant_opcua.buffer.flush" and unit["buffer"] == str(buffer.path)
        assert (first.status, first.error_type) == ("pending", "SYNC_FAILED") and first.next_retry_at is not None
        in_unit = buffer.pending(100_000, through_seq=unit["through_seq"])
        assert len(in_unit) == unit["entries"] > 0 and in_unit[0].seq == unit["first_seq"]
        unit_batches = sorted(int(e.payload["seq"]) for e in in_unit if e.kind == BATCH)
        assert unit_batches
        # A minute later the database still refuses: the next run buffers what is new and fails on its own row.
        wait_for_batches(plant, max(unit_batches) + 2)
        with pytest.raises(IntegrationError):
            run()
    second = error_rows("plant_opcua")[-1]
    assert second.id != first.id and unit_of(second)["through_seq"] > unit["through_seq"]

    # The database is back; the first flush's queued rerun loads its entries and nothing the later run buffered.
    make_due(first.id)
    outcome = rerun(first.id, by="flow:retry-failed-units")
    assert outcome.status == "resolved" and outcome.summary is not None and outcome.summary["extracted"] == len(in_unit)
    assert loaded_seqs() == unit_batches
    with get_engine().connect() as conn:
        keys = set(conn.execute(select(PlantReading.reading_key)).scalars())
    expected = map_plant_readings([e.payload for e in in_unit if e.kind == READING], stale_after_s=plant_opcua_config().stale_after_s)
    assert keys == set(expected["reading_key"])
    waiting = buffer.pending(100_000)
    assert waiting and waiting[0].seq == unit["through_seq"] + 1  # the later run's entries still wait, in order
    assert get_error(first.id).status == "resolved" and get_error(second.id).status == "pending"
    assert len(error_rows("plant_opcua")) == 2  # the rerun recorded no new row

    back = run()  # the next collection loads the rest, after them
    assert loaded_seqs() == list(range(1, back["watermark"] + 1)) and buffer.count() == 0
    assert get_error(second.id).status == "resolved"


@pytest.fixture
def bigger_mixer_and_wetter_sand(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """The 'fix': the plant now has an 8 t mixer, and the new dryer's moisture probe reads up to 30 %."""
    import expectations.plant as suite

    monkeypatch.setattr(suite, "MAX_BATCH_KG", 8000.0)
    monkeypatch.setitem(suite.TAG_SPECS, "MoistureInPct", suite.TagSpec("%", 0.0, 30.0))
    _rebuild_plant_suites()
    yield
    monkeypatch.undo()
    _rebuild_plant_suites()


def _rebuild_plant_suites() -> None:
    """The suites are built once per process and cached by the runner: drop both so the current code is used."""
    import expectations.plant as suite
    from expectations import runner

    suite.readings_suite.cache_clear()
    suite.batches_suite.cache_clear()
    runner.reset()


def test_quarantined_batches_and_readings_replay_through_the_fixed_suite(plant: ThreadedPlant, request: pytest.FixtureRequest) -> None:
    from hub.ledger.errors import get_error
    from hub.ledger.quarantine import NothingSelected, list_quarantine, replay

    wait_for_batches(plant, 1)
    now = datetime.now(UTC)
    heavy = BatchRecord(
        seq=0, batch_id="M1-HEAVY-7T", product_code="TILE-ADH-C1", recipe_code="R-TA-C1", mixer="M1",
        started_at=now, ended_at=now, mixing_time_s=120.0,
        components=["Cement", "Sand"], target_kg=[2500.0, 4500.0], actual_kg=[2510.0, 4490.0],
    )

    async def publish() -> None:
        heavy.seq = plant.sim.batch_counter + 1
        await plant.sim.publish_batch(heavy)

    plant.call(publish())
    stamp = now.isoformat()
    wet = {"tag": "Dryer/MoistureInPct", "node_id": "ns=2;s=Plant.Dryer.MoistureInPct", "unit": "%", "value": 23.5,
           "status_code": 0, "status_name": "Good", "source_timestamp": stamp, "server_timestamp": stamp, "collected_at": stamp}
    open_buffer(plant_opcua_config()).append([(READING, wet)])  # collected by an earlier run, waiting in the buffer
    summary = run()
    assert summary["quarantined"] == 2
    refused = {r.dataset: r for r in list_quarantine(integration="plant_opcua", limit=100)}
    assert refused["production_batches"].record_key == "M1-HEAVY-7T"
    assert refused["plant_readings"].raw_record["value"] == 23.5
    errors = {r.dataset: r for r in error_rows("plant_opcua") if r.error_type == "DATA_VALIDATION_FAILED"}
    assert set(errors) == {"plant_readings", "production_batches"}  # one per dataset, each linked to its rows
    assert {refused[d].error_id for d in refused} == {errors[d].id for d in errors}

    request.getfixturevalue("bigger_mixer_and_wetter_sand")
    result = replay(integration="plant_opcua", by="meena", reason="8 t mixer commissioned; new moisture probe (PLANT-12)")
    assert (result.selected, result.loaded, result.still_failing, result.superseded) == (2, 2, 0, 0)
    assert sorted(result.errors_resolved) == sorted(e.id for e in errors.values())
    with get_engine().connect() as conn:
        batch = conn.execute(select(ProductionBatch).where(ProductionBatch.batch_id == "M1-HEAVY-7T")).one()
        reading = conn.execute(select(PlantReading).where(PlantReading.tag == "Dryer/MoistureInPct", PlantReading.value == 23.5)).one()
    assert batch.total_actual_kg == pytest.approx(7000.0) and batch.source_run_id == "quarantine-replay:meena"
    assert reading.quality == "good" and reading.loaded_at is not None
    assert all(get_error(e.id).status == "resolved" for e in errors.values())
    assert {r.status for r in list_quarantine(integration="plant_opcua", status=None, limit=100)} == {"replayed"}
    with pytest.raises(NothingSelected):
        replay(integration="plant_opcua", by="meena")  # nothing open: nothing loaded twice


# ------------------------------------------------------------------ another vendor's server, the site's tag map


@pytest.fixture
def vendor_env(db: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[..., Any]]:
    """`vendor_env(layout, tag_map, **sim)`: the vendor simulator in a thread, the hub pointed at it with that map."""
    from tests.connectors.plant.vendor_support import ThreadedVendor

    servers: list[ThreadedVendor] = []

    def start(layout: str, tag_map: Path, **kwargs: Any) -> ThreadedVendor:
        server = ThreadedVendor(layout, **kwargs)
        servers.append(server)
        monkeypatch.setenv("PLANT_OPCUA_URL", server.url)
        monkeypatch.setenv("PLANT_OPCUA_TAG_MAP", str(tag_map))
        monkeypatch.setenv("PLANT_OPCUA_BUFFER_DIR", str(tmp_path / "buffer"))
        reset_settings_cache()
        return server

    try:
        yield start
    finally:
        for server in servers:
            server.close()
        reset_settings_cache()


def test_kepware_readings_are_collected_and_undeclared_batches_are_one_information_line(
    vendor_env: Callable[..., Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from tests.connectors.plant.vendor_support import PROFILES, drifted_kepware_map

    server = vendor_env("kepware", PROFILES / "kepware.toml", tags=100)
    summary = run()
    assert summary["batches_note"] == f"batches: not declared in {PROFILES / 'kepware.toml'}"
    assert summary["drift_warning"] is None and summary["batches_read"] == 0 and summary["watermark"] is None
    assert summary["readings_read"] == 120 and summary["quarantined"] == 0 and summary["buffer_pending"] == 0
    assert server.sim.live_sessions() == 0  # the run's one session is closed
    assert max(server.sim.request_sizes["MaxNodesPerRead"]) <= 50
    with get_engine().connect() as conn:
        rows = {r.tag: r for r in conn.execute(select(PlantReading)).all()}
        errors = conn.execute(select(func.count()).select_from(IntegrationErrorRow)).scalar_one()
    assert len(rows) == 120 and errors == 0
    current = rows["Mixers/Mixer1/MotorCurrentA"]
    assert (current.equipment, current.unit, current.node_id) == ("Mixers/Mixer1", "A", "ns=2;s=Mixing.Mixer1.MotorCurrent")
    assert rows["Field/AnalogIn/AI_100"].node_id == "ns=2;i=1100"
    assert count(ProductionBatch) == 0

    # A drifted map: the missing tag is a warning of the run, every other tag is still collected.
    drifted = drifted_kepware_map(tmp_path)
    monkeypatch.setenv("PLANT_OPCUA_TAG_MAP", str(drifted))
    reset_settings_cache()
    again = run()
    assert again["drift_warning"] and "1 mapped tag(s) missing" in again["drift_warning"] and "4 server variable(s) not in the map" in again["drift_warning"]
    assert again["drift"]["missing"][0]["mapped"] == "nsu=KEPServerEX;s=Dryer.Dryer1.ExhaustTemp"
    assert again["readings_read"] == 120 - 4  # the silo materials are no longer mapped; the missing tag is not read


def test_s7_structure_batches_are_collected_into_production_batches(vendor_env: Callable[..., Any]) -> None:
    from tests.connectors.plant.vendor_support import PROFILES

    server = vendor_env("s7", PROFILES / "s7-1500.toml", tags=60, batches=True, tick_s=3600.0)

    def complete_batches(n: int) -> None:
        target = server.sim.batch_count + n
        while server.sim.batch_count < target:
            server.call(server.sim.step(20.0))

    complete_batches(1)
    first = run()
    assert first["batches_note"] is None and first["drift_warning"] is None
    assert first["batches_read"] == 1 and first["watermark"] == server.sim.batch_count and first["quarantined"] == 0
    again = run()  # the structure still holds the same batch: nothing new
    assert again["batches_read"] == 0 and again["since"] == first["watermark"]
    complete_batches(1)
    last = server.sim.last_batch
    third = run()
    assert third["batches_read"] == 1 and last is not None
    with get_engine().connect() as conn:
        batches = {b.batch_id: b for b in conn.execute(select(ProductionBatch)).all()}
        readings = conn.execute(select(func.count()).select_from(PlantReading)).scalar_one()
    assert len(batches) == 2 and last.batch_id in batches
    loaded = batches[last.batch_id]
    assert loaded.batch_seq == last.count and loaded.recipe_code == last.recipe_id and loaded.mixer == last.mixer
    assert loaded.total_actual_kg == pytest.approx(sum(last.actual_kg), rel=1e-4)
    assert readings >= 2 * 6 + 4 * 2 + 2 + 60
