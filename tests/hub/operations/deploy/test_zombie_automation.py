"""The zombie-run automation `drymix deploy` and `drymix up` register: Prefect's own definition, once, kept current."""

from __future__ import annotations

from typing import Any

import pytest

from hub.operations.deploy import (
    MISSED_HEARTBEATS,
    ZOMBIE_AUTOMATION,
    ensure_zombie_automation,
    zombie_automation,
)

pytestmark = pytest.mark.usefixtures("prefect_harness")


def _registered(client: Any) -> list[Any]:
    return list(client.read_automations_by_name(ZOMBIE_AUTOMATION))


def test_the_automation_is_registered_once_for_the_heartbeat_interval_runs_send() -> None:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.objects import StateType
    from prefect.events.schemas.automations import Posture
    from prefect.settings import PREFECT_FLOWS_HEARTBEAT_FREQUENCY, temporary_settings

    with get_client(sync_client=True) as client:
        for automation in _registered(client):
            client.delete_automation(automation.id)
        assert ensure_zombie_automation(client) == ZOMBIE_AUTOMATION
        [created] = _registered(client)
        assert ensure_zombie_automation(client) == ZOMBIE_AUTOMATION  # a second deploy changes nothing
        [automation] = _registered(client)
        assert automation.id == created.id
        trigger = automation.trigger
        assert trigger.after == {"prefect.flow-run.heartbeat"} and trigger.expect == {"prefect.flow-run.*"}
        assert trigger.posture == Posture.Proactive and trigger.for_each == {"prefect.resource.id"}
        assert trigger.within.total_seconds() == MISSED_HEARTBEATS * 180  # Prefect's default interval
        [action] = automation.actions
        assert action.type == "change-flow-run-state" and action.state == StateType.CRASHED
        first = automation.id

        # Runs sending heartbeats every 60 s: the automation follows, still one.
        with temporary_settings({PREFECT_FLOWS_HEARTBEAT_FREQUENCY: 60}):
            ensure_zombie_automation(client)
        [automation] = _registered(client)
        assert automation.trigger.within.total_seconds() == MISSED_HEARTBEATS * 60 and automation.id != first
        client.delete_automation(automation.id)


def test_no_heartbeats_no_automation(monkeypatch: pytest.MonkeyPatch) -> None:
    from prefect.client.orchestration import get_client
    from prefect.settings import get_current_settings

    settings = get_current_settings()
    monkeypatch.setattr(settings.flows, "heartbeat_frequency", None)
    with get_client(sync_client=True) as client:
        assert ensure_zombie_automation(client) is None
        assert _registered(client) == []


def test_the_definition_is_prefects_zombie_flow_automation() -> None:
    automation = zombie_automation(30)
    assert automation.name == ZOMBIE_AUTOMATION and automation.enabled
    assert automation.trigger.match.model_dump() == {"prefect.resource.id": ["prefect.flow-run.*"]}
    assert automation.trigger.threshold == 1 and automation.trigger.within.total_seconds() == 90


def test_a_run_whose_heartbeats_stop_is_marked_crashed_and_a_finished_one_is_not() -> None:
    """The automation at work on a real Prefect server, with a short interval (Prefect allows 10 s at least)."""
    import time

    from prefect import flow
    from prefect.client.orchestration import get_client
    from prefect.events import emit_event
    from prefect.states import Completed, Running

    @flow(name="zombie-probe")
    def probe() -> int:
        return 1

    def heartbeat(run_id: Any) -> None:
        emit_event(event="prefect.flow-run.heartbeat", resource={"prefect.resource.id": f"prefect.flow-run.{run_id}"})

    with get_client(sync_client=True) as client:
        automation = client.create_automation(zombie_automation(4))  # within 12 s
        try:
            killed, finished = client.create_flow_run(probe), client.create_flow_run(probe)
            for run in (killed, finished):
                client.set_flow_run_state(run.id, Running(), force=True)
                heartbeat(run.id)
            client.set_flow_run_state(finished.id, Completed(), force=True)  # its last event is a state: nothing to do
            deadline = time.monotonic() + 90
            while time.monotonic() < deadline and client.read_flow_run(killed.id).state.type.value != "CRASHED":
                time.sleep(1)
            state = client.read_flow_run(killed.id).state
            assert state.type.value == "CRASHED", state
            assert "no heartbeat for 12 s" in (state.message or "")
            assert client.read_flow_run(finished.id).state.type.value == "COMPLETED"
        finally:
            client.delete_automation(automation)
