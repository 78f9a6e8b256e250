"""A flow run ends when its work does: the heartbeat thread stops at once, and heartbeats are still sent."""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest

import flows  # noqa: F401 - installs the prompt heartbeat stop, as every flow module does
from hub.runtime.prefect_runtime import stop_heartbeats_promptly


class FakeEngine:
    """What the heartbeat context reads of Prefect's flow run engine."""

    heartbeat_seconds = 30
    flow_run = None

    def __init__(self) -> None:
        self.sent: list[tuple[Any, Any]] = []
        self.first = threading.Event()
        self.logger = __import__("logging").getLogger("test")

    def _build_heartbeat_event_template(self) -> tuple[dict[str, str], list[Any]]:
        return {"prefect.resource.id": "prefect.flow-run.x"}, []

    def _emit_flow_run_heartbeat(self, resource: Any, related: Any) -> None:
        self.sent.append((resource, related))
        self.first.set()


def test_the_heartbeat_thread_stops_when_the_run_ends_not_a_second_later() -> None:
    from prefect import flow_engine

    assert stop_heartbeats_promptly() is True
    engine = FakeEngine()
    with flow_engine._send_heartbeats(engine):
        assert engine.first.wait(5), "no heartbeat was sent when the run started"
        started = time.perf_counter()
    ended = time.perf_counter() - started
    # Prefect's own loop sleeps in whole seconds here: its exit took up to 1 s (0.5 s on average).
    assert ended < 0.5, f"the run's end waited {ended:.2f}s for the heartbeat thread"
    assert engine.sent == [({"prefect.resource.id": "prefect.flow-run.x"}, [])]
    assert not [t for t in threading.enumerate() if t.name == "flow-heartbeat"]


@pytest.mark.usefixtures("prefect_harness")
def test_a_real_flow_run_still_sends_its_heartbeat(monkeypatch: pytest.MonkeyPatch) -> None:
    from prefect import flow, flow_engine

    sent: list[str] = []
    original = flow_engine.FlowRunEngine._emit_flow_run_heartbeat

    def counted(self: Any, resource: Any, related: Any) -> None:
        sent.append(resource["prefect.resource.id"])
        original(self, resource, related)

    monkeypatch.setattr(flow_engine.FlowRunEngine, "_emit_flow_run_heartbeat", counted)

    @flow(name="heartbeat-check")
    def short() -> int:
        deadline = time.monotonic() + 5
        while not sent and time.monotonic() < deadline:  # the first heartbeat goes out as the run starts
            time.sleep(0.01)
        return 1

    assert short() == 1
    assert sent and sent[0].startswith("prefect.flow-run.")
    assert flow_engine._send_heartbeats._prompt_stop  # type: ignore[attr-defined]
