"""Pause Python's cyclic garbage collector around bulk object creation.

Parsing a 25 MB OData page or mapping 20,000 records creates millions of small objects; each one can
trigger a collection that walks every live object, which made parsing 2.5x slower than it needs to be.
The data involved has no reference cycles, so nothing is lost by pausing. A counter keeps nested and
concurrent (threaded) pauses correct: the collector comes back only when the last one ends.
"""

from __future__ import annotations

import functools
import gc
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import ParamSpec, TypeVar

P = ParamSpec("P")
R = TypeVar("R")

_lock = threading.Lock()
_depth = 0
_was_enabled = True


@contextmanager
def paused_gc() -> Iterator[None]:
    global _depth, _was_enabled
    with _lock:
        if _depth == 0:
            _was_enabled = gc.isenabled()
            gc.disable()
        _depth += 1
    try:
        yield
    finally:
        with _lock:
            _depth -= 1
            if _depth == 0 and _was_enabled:
                gc.enable()


# A run's long-lived objects (Prefect's, Great Expectations', pandas', the suites) are millions of containers
# that never become garbage, yet each full collection walks them all again when the collector comes back
# after a batch or during Data Docs (~0.2 s for the one full collection of bench/sap_sync.py's sync). Frozen
# (`gc.freeze`, CPython's own tool for this), they are left out of every collection until the last
# run ends; what is frozen with them and dies meanwhile is still freed by reference counting, only its
# cycles wait for the run's end (`gc.unfreeze` hands them back). Measured there with `gc.callbacks`: 0.38-0.47 s
# in collections per 100k partners before, 0.10-0.17 s after (docs/performance.md, seventh round).
_runs = 0


@contextmanager
def frozen_long_lived() -> Iterator[None]:
    """A run's scope: what is alive on entry, and at each `freeze_long_lived()` inside, skips collections."""
    global _runs
    with _lock:
        _runs += 1
        gc.freeze()
    try:
        yield
    finally:
        with _lock:
            _runs -= 1
            if _runs == 0:
                gc.unfreeze()


def freeze_long_lived() -> bool:
    """Freeze what is alive now (a suite just loaded, say), if a run's scope is open; True when it froze."""
    with _lock:
        if _runs == 0:
            return False
        gc.freeze()
        return True


def long_lived_frozen(fn: Callable[P, R]) -> Callable[P, R]:
    """`fn` runs inside `frozen_long_lived()`: for the entry point of a run."""

    @functools.wraps(fn)
    def run(*args: P.args, **kwargs: P.kwargs) -> R:
        with frozen_long_lived():
            return fn(*args, **kwargs)

    return run
