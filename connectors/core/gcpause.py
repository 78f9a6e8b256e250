"""Pause Python's cyclic garbage collector around bulk object creation.

Parsing a 25 MB OData page or mapping 20,000 records creates millions of small objects; each one can
trigger a collection that walks every live object, which made parsing 2.5x slower than it needs to be.
The data involved has no reference cycles, so nothing is lost by pausing. A counter keeps nested and
concurrent (threaded) pauses correct: the collector comes back only when the last one ends.
"""

from __future__ import annotations

import gc
import threading
from collections.abc import Iterator
from contextlib import contextmanager

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
