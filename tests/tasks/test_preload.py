"""The suite's preload: started once per suite and process, as a run begins, and tried again after a failure."""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass, field

import pytest

import expectations.runner as runner
import tasks.engine as engine
from hub.systems.google import CALENDAR_EVENTS
from hub.systems.sap import CUSTOMERS


@dataclass
class Preloads:
    calls: list[str] = field(default_factory=list)  # the suites preloaded, in order
    failing: list[bool] = field(default_factory=list)  # the next preloads fail while its head is True
    done: threading.Semaphore = field(default_factory=lambda: threading.Semaphore(0))

    def wait(self) -> None:
        assert self.done.acquire(timeout=10)


@pytest.fixture
def preloads(monkeypatch: pytest.MonkeyPatch) -> Preloads:
    seen = Preloads()
    calls, failing, done = seen.calls, seen.failing, seen.done

    def preload(suite: str) -> None:
        calls.append(suite)
        try:
            if failing and failing.pop(0):
                raise RuntimeError("no suite here")
        finally:
            done.release()

    monkeypatch.setattr(runner, "preload", preload)
    monkeypatch.setattr(engine, "_preloads", set())
    return seen


def test_a_suite_is_preloaded_once_per_process(preloads: Preloads) -> None:
    calls = preloads.calls
    log = logging.getLogger("test")
    engine.start_preload(CUSTOMERS, log)
    preloads.wait()
    engine.start_preload(CUSTOMERS, log)  # the next run: GX and the suite are loaded already
    assert calls == ["customers"]


def test_a_failed_preload_is_tried_again_by_the_next_run(preloads: Preloads, caplog: pytest.LogCaptureFixture) -> None:
    calls = preloads.calls
    preloads.failing.append(True)
    log = logging.getLogger("test.preload")
    with caplog.at_level(logging.WARNING, logger="test.preload"):
        engine.start_preload(CUSTOMERS, log)
        preloads.wait()
        for _ in range(100):  # the warning and the retry mark come just after the preload returns
            if "customers" not in engine._preloads:
                break
            threading.Event().wait(0.01)
    assert "preloading the customers suite failed: no suite here" in caplog.text
    engine.start_preload(CUSTOMERS, log)
    preloads.wait()
    assert calls == ["customers", "customers"]


def test_a_dataset_without_a_suite_preloads_nothing(preloads: Preloads) -> None:
    calls = preloads.calls
    assert CALENDAR_EVENTS.suite is None  # applied by the dataset's own code, not validated by a suite
    engine.start_preload(CALENDAR_EVENTS, logging.getLogger("test"))
    assert calls == [] and engine._preloads == set()
