"""The collector's pause and the freezing of a run's long-lived objects."""

from __future__ import annotations

import gc
import threading
from typing import Any

import pytest

from connectors.core.gcpause import freeze_long_lived, frozen_long_lived, long_lived_frozen, paused_gc


class _Node:
    def __init__(self) -> None:
        self.other: Any = None


def test_nested_and_concurrent_pauses_bring_the_collector_back_only_after_the_last() -> None:
    assert gc.isenabled()
    entered, release = threading.Event(), threading.Event()

    def other() -> None:
        with paused_gc():
            entered.set()
            release.wait(10)

    thread = threading.Thread(target=other)
    thread.start()
    entered.wait(10)
    with paused_gc():
        with paused_gc():
            assert not gc.isenabled()
        assert not gc.isenabled()
    assert not gc.isenabled()  # the other thread's pause still holds
    release.set()
    thread.join(10)
    assert gc.isenabled()


def test_objects_alive_when_a_run_starts_skip_collections_until_the_last_run_ends() -> None:
    assert gc.get_freeze_count() == 0
    before = _Node()
    with frozen_long_lived():
        frozen = gc.get_freeze_count()
        assert frozen > 0
        with frozen_long_lived():  # a second run in the same process
            late = _Node()
            assert freeze_long_lived()  # a suite loaded meanwhile
            assert gc.get_freeze_count() > frozen
        assert gc.get_freeze_count() > 0  # the first run still runs: nothing unfrozen yet
        assert before is not None and late is not None
    assert gc.get_freeze_count() == 0
    assert not freeze_long_lived()  # outside a run nothing is frozen
    assert gc.get_freeze_count() == 0


def test_a_cycle_frozen_during_a_run_is_collected_after_it() -> None:
    import weakref

    @long_lived_frozen
    def run() -> weakref.ref[_Node]:
        a, b = _Node(), _Node()
        a.other, b.other = b, a  # a cycle: only the collector frees it
        freeze_long_lived()
        ref = weakref.ref(a)
        del a, b
        gc.collect()
        assert ref() is not None  # frozen: the collector leaves it alone while the run lasts
        return ref

    ref = run()
    gc.collect()
    assert ref() is None
    assert gc.get_freeze_count() == 0


def test_a_failing_run_unfreezes_too() -> None:
    @long_lived_frozen
    def run() -> None:
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        run()
    assert gc.get_freeze_count() == 0
