"""The plant connector against the real asyncua sandbox server (no mocks): discovery, batched reads with
status codes and source timestamps, subscriptions, batch records, security, and the error taxonomy."""

from __future__ import annotations

import asyncio
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from asyncua import ua

from connectors.core.config import PlantOpcuaConfig, RetryPolicy
from connectors.core.errors import (
    AuthenticationFailed,
    ErrorCategory,
    IntegrationError,
    InvalidRequest,
    RequestTimeout,
    ServerError,
)
from connectors.plant import PlantConnector
from sandbox.plant import PlantSimulator, free_port, running_plant


def run(coro: Any) -> Any:
    return asyncio.run(coro)


def test_discovers_every_plant_tag_with_its_engineering_unit(plant_config: Callable[..., PlantOpcuaConfig]) -> None:
    async def scenario() -> None:
        async with running_plant(mixers=2, ring_size=5, speed=1.0) as sim, PlantConnector(plant_config(sim.url)) as plant:
            tags = {t.tag: t for t in await plant.discover()}
            status = await plant.status_tags()
        assert tags["Mixers/M1/MotorCurrentA"].unit == "A"
        assert tags["Mixers/M2/Scales/Cement/ActualKg"].unit == "kg"
        assert tags["Silos/S1/LevelPct"].unit == "%"
        assert tags["Dryer/SandTemperatureC"].unit == "degC"
        assert tags["Silos/S1/Material"].unit is None
        assert tags["Mixers/M1/MotorCurrentA"].node_id == sim.node_id("Mixers/M1/MotorCurrentA")
        # 2 mixers x (5 + 6 scales x 2) + 8 silos x 2 + 3 dryer tags; batch bookkeeping is not a status tag.
        assert len(status) == 2 * 17 + 16 + 3
        assert not any(t.tag.startswith("Batches/") for t in status)
        assert len(plant._slots or []) == 5

    run(scenario())


def test_batched_read_keeps_status_codes_and_source_timestamps_within_page_size(plant_config: Callable[..., PlantOpcuaConfig]) -> None:
    async def scenario() -> None:
        async with running_plant(ring_size=10, mixers=1, speed=1.0, tick_s=3600.0) as sim:
            async with PlantConnector(plant_config(sim.url, page_size=7)) as plant:
                tags = await plant.status_tags()
                sim.faults.bad_quality_ratio = 1.0  # every analog value the next step writes is BadSensorFailure
                await sim.step(1.0)
                reads_before = sim.reads
                readings = await plant.read_tags(tags)
                reads = sim.reads - reads_before
        assert reads == math.ceil(len(tags) / 7)  # bounded node count per Read request
        by_tag = {r.tag: r for r in readings}
        current = by_tag["Mixers/M1/MotorCurrentA"]
        assert current.status_name == "BadSensorFailure"
        assert current.status_code == ua.StatusCodes.BadSensorFailure
        assert current.source_timestamp is not None and current.source_timestamp.tzinfo is not None
        state = by_tag["Mixers/M1/State"]
        assert state.status_code == 0 and state.status_name == "Good" and isinstance(state.value, str)
        assert len(readings) == len(tags)

    run(scenario())


def test_a_stale_tag_keeps_its_source_timestamp_while_others_move(plant_config: Callable[..., PlantOpcuaConfig]) -> None:
    async def scenario() -> None:
        faults = {"stale_tags": ["Dryer/MoistureInPct"]}
        async with running_plant(ring_size=10, mixers=1, speed=1.0, tick_s=3600.0, faults=faults) as sim:
            async with PlantConnector(plant_config(sim.url)) as plant:
                tags = [t for t in await plant.status_tags() if t.tag in ("Dryer/MoistureInPct", "Dryer/SandTemperatureC")]
                first = {r.tag: r for r in await plant.read_tags(tags)}
                await asyncio.sleep(0.05)
                await sim.step(1.0)
                second = {r.tag: r for r in await plant.read_tags(tags)}
        assert second["Dryer/MoistureInPct"].source_timestamp == first["Dryer/MoistureInPct"].source_timestamp
        assert second["Dryer/SandTemperatureC"].source_timestamp > first["Dryer/SandTemperatureC"].source_timestamp  # type: ignore[operator]

    run(scenario())


def test_subscription_delivers_data_changes_as_readings(plant_config: Callable[..., PlantOpcuaConfig]) -> None:
    async def scenario() -> None:
        async with running_plant(ring_size=10, mixers=1, speed=50.0, tick_s=0.1) as sim:
            async with PlantConnector(plant_config(sim.url, subscription_period_ms=100.0)) as plant:
                tags = [t for t in await plant.status_tags() if t.measurement in ("MotorCurrentA", "SandTemperatureC")]
                subscription = await plant.subscribe(tags)
                try:
                    changes = await subscription.collect(1.5)
                finally:
                    await subscription.close()
        seen = {r.tag for r in changes}
        assert seen == {"Mixers/M1/MotorCurrentA", "Dryer/SandTemperatureC"}
        assert len(changes) > len(tags)  # values kept changing: more than the initial notification each
        stamps = [r.source_timestamp for r in changes if r.tag == "Dryer/SandTemperatureC"]
        assert stamps == sorted(stamps)  # type: ignore[type-var]
        assert all(r.unit in ("A", "degC") for r in changes)

    run(scenario())


def test_batch_records_after_a_cursor_come_once_and_in_order(plant_config: Callable[..., PlantOpcuaConfig]) -> None:
    async def scenario() -> None:
        async with running_plant(mixers=3, speed=400.0, tick_s=0.05, ring_size=50) as sim:
            async with PlantConnector(plant_config(sim.url)) as plant:
                while sim.batch_counter < 6:
                    await asyncio.sleep(0.05)
                first = await plant.read_batches(None)
                cursor = first.records[-1]["seq"]
                while sim.batch_counter < cursor + 4:
                    await asyncio.sleep(0.05)
                second = await plant.read_batches(cursor)
        seqs = [r["seq"] for r in first.records + second.records]
        assert seqs == list(range(1, seqs[-1] + 1))
        assert second.missed == 0 and not second.counter_reset
        record = first.records[0]
        assert record["batch_id"] and record["mixer"].startswith("M")
        assert len(record["components"]) == len(record["target_kg"]) == len(record["actual_kg"]) > 0
        assert record["started_at"] <= record["ended_at"]

    run(scenario())


def test_ring_overrun_is_reported_as_missed_records(plant_config: Callable[..., PlantOpcuaConfig]) -> None:
    async def scenario() -> None:
        async with running_plant(mixers=3, speed=400.0, tick_s=0.05, ring_size=3) as sim:
            async with PlantConnector(plant_config(sim.url)) as plant:
                while sim.batch_counter < 8:
                    await asyncio.sleep(0.05)
                # Slots written after the counter was read are left for the next collection; on a loaded machine
                # the simulator (400x, a ring of 3) can refill all three between the two reads, so read again.
                for _ in range(40):
                    collection = await plant.read_batches(1)
                    if collection.oldest_available is not None:
                        break
                    await asyncio.sleep(0.05)
        assert collection.oldest_available is not None and collection.oldest_available > 2
        assert collection.missed == collection.oldest_available - 2
        assert [r["seq"] for r in collection.records] == sorted(r["seq"] for r in collection.records)

    run(scenario())


def test_sign_and_encrypt_session_with_generated_certificates(plant_config: Callable[..., PlantOpcuaConfig], tmp_path: Path) -> None:
    async def scenario() -> None:
        async with running_plant(ring_size=10, mixers=1, speed=1.0, secure=True, pki_dir=tmp_path / "server_pki") as sim:
            assert sim.server_certificate is not None and sim.server_certificate.exists()
            config = plant_config(sim.url, security="sign_and_encrypt", server_certificate=sim.server_certificate)
            async with PlantConnector(config) as plant:
                policy = plant.client.security_policy
                readings = await plant.read_snapshot()
            assert policy.URI == "http://opcfoundation.org/UA/SecurityPolicy#Basic256Sha256"
            assert policy.Mode == ua.MessageSecurityMode.SignAndEncrypt
            assert config.client_certificate.exists() and config.client_private_key.exists()
            assert readings and all(r.status_name for r in readings)
            # Without a pinned server certificate the client takes it from GetEndpoints.
            async with PlantConnector(plant_config(sim.url, security="sign_and_encrypt")) as plant:
                assert (await plant.read_snapshot())
            # A client without security is refused by a server that only offers SignAndEncrypt.
            with pytest.raises(IntegrationError) as refused:
                async with PlantConnector(plant_config(sim.url, retry=RetryPolicy(max_retries=0))):
                    pass
            assert refused.value.category in (ErrorCategory.AUTHENTICATION_FAILED, ErrorCategory.SERVER_ERROR)

    run(scenario())


def test_username_and_password_session(plant_config: Callable[..., PlantOpcuaConfig]) -> None:
    from pydantic import SecretStr

    async def scenario() -> None:
        async with running_plant(ring_size=10, mixers=1, speed=1.0, users={"hub": "s3cret"}) as sim:
            async with PlantConnector(plant_config(sim.url), username="hub", password=SecretStr("s3cret")) as plant:
                assert await plant.read_snapshot()
            with pytest.raises(AuthenticationFailed) as wrong:
                async with PlantConnector(plant_config(sim.url), username="hub", password=SecretStr("wrong")):
                    pass
            assert "s3cret" not in str(wrong.value) and "wrong" not in wrong.value.message.split(":")[-1]
            with pytest.raises(AuthenticationFailed):
                async with PlantConnector(plant_config(sim.url)):  # anonymous is not offered
                    pass

    run(scenario())


@pytest.mark.usefixtures("prefect_harness")
def test_builder_takes_the_session_password_from_a_prefect_secret_block(
    plant_config: Callable[..., PlantOpcuaConfig], monkeypatch: pytest.MonkeyPatch
) -> None:
    """PLANT_OPCUA_USERNAME in the environment, the password only in the `plant-opcua-password` block."""
    from prefect.blocks.system import Secret

    from connectors.core.redact import redact_text
    from hub.core.secrets import install_fallback
    from hub.core.settings import reset_settings_cache
    from hub.runtime.connections import build_plant_connector
    from hub.runtime.secret_blocks import install as install_secret_blocks

    Secret(value="plant-block-pw-771").save("plant-opcua-password", overwrite=True)
    monkeypatch.setenv("PLANT_OPCUA_USERNAME", "hub")
    monkeypatch.delenv("PLANT_OPCUA_PASSWORD", raising=False)
    reset_settings_cache()
    # What the flow runtime does on import (tasks/__init__.py); the test must not rely on another test
    # module having imported `tasks` first.
    previous = install_secret_blocks()

    async def scenario() -> None:
        async with running_plant(ring_size=10, mixers=1, speed=1.0, users={"hub": "plant-block-pw-771"}) as sim:
            async with build_plant_connector(plant_config(sim.url)) as plant:
                assert await plant.read_snapshot()

    try:
        run(scenario())
    finally:
        reset_settings_cache()
        install_fallback(previous)
    assert "plant-block-pw-771" not in redact_text("session for hub with plant-block-pw-771")


# ------------------------------------------------------------------------- taxonomy


def test_unknown_node_id_is_an_invalid_request(plant_config: Callable[..., PlantOpcuaConfig]) -> None:
    async def scenario() -> None:
        async with running_plant(ring_size=10, mixers=1, speed=1.0) as sim, PlantConnector(plant_config(sim.url)) as plant:
            with pytest.raises(InvalidRequest) as info:
                await plant.read_node(sim.node_id("Mixers/M9/NoSuchTag"))
        assert info.value.code == "BadNodeIdUnknown"
        assert not info.value.transient

    run(scenario())


def test_refused_session_is_authentication_failed_and_not_retried(plant_config: Callable[..., PlantOpcuaConfig]) -> None:
    async def scenario() -> None:
        async with running_plant(ring_size=10, mixers=1, speed=1.0, faults={"refuse_sessions": True}) as sim:
            with pytest.raises(AuthenticationFailed) as info:
                async with PlantConnector(plant_config(sim.url)):
                    pass
        assert info.value.code == "BadUserAccessDenied"
        assert not info.value.transient

    run(scenario())


def test_request_timeout_is_timeout(plant_config: Callable[..., PlantOpcuaConfig]) -> None:
    async def scenario() -> None:
        async with running_plant(ring_size=10, mixers=1, speed=1.0) as sim:
            config = plant_config(sim.url, timeout_s=0.5, retry=RetryPolicy(max_retries=0))
            async with PlantConnector(config) as plant:
                tags = await plant.status_tags()
                sim.faults.read_delay_ms = 2000
                with pytest.raises(RequestTimeout) as info:
                    await plant.read_tags(tags[:3])
                sim.faults.read_delay_ms = 0
        assert info.value.transient

    run(scenario())


def test_connection_refused_is_a_transient_server_error(plant_config: Callable[..., PlantOpcuaConfig]) -> None:
    async def scenario() -> None:
        url = f"opc.tcp://127.0.0.1:{free_port()}/drymix/plant/"  # nobody listens there
        config = plant_config(url, retry=RetryPolicy(max_retries=1, base_delay_ms=10, max_delay_ms=20))
        with pytest.raises(ServerError) as info:
            async with PlantConnector(config):
                pass
        assert info.value.code == "CONNECT_ERROR"
        assert info.value.transient

    run(scenario())


def test_a_map_namespace_the_server_lacks_is_reported_with_the_file_to_fix(
    plant_config: Callable[..., PlantOpcuaConfig], tmp_path: Path
) -> None:
    shipped = Path(plant_config("opc.tcp://unused").tag_map).read_text()
    elsewhere = tmp_path / "elsewhere.toml"
    elsewhere.write_text(shipped.replace('plant = "urn:drymix:plant"', 'plant = "urn:elsewhere"'))

    async def scenario() -> None:
        async with running_plant(ring_size=10, mixers=1, speed=1.0) as sim:
            with pytest.raises(IntegrationError) as info:
                async with PlantConnector(plant_config(sim.url, tag_map=elsewhere)):
                    pass
        assert info.value.code == "NAMESPACE_UNKNOWN" and not info.value.transient
        assert "urn:elsewhere" in info.value.message and str(elsewhere) in info.value.message
        assert "urn:drymix:plant" in info.value.message  # what the server has instead

    run(scenario())


def test_simulator_refuses_an_impossible_plant() -> None:
    with pytest.raises(ValueError):
        PlantSimulator(mixers=0)
