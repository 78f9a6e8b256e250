"""Mappings are pure: no mapping reads the clock (import-linter checks their imports; the clock is a call).

A mapping that needs "now" takes it as a parameter (`now: datetime`) from its caller, so the same input
always maps to the same output and a test can pin the time.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

MAPPINGS = Path(__file__).resolve().parents[2] / "data_mappings"

CLOCK_READS = frozenset({
    "datetime.datetime.now", "datetime.datetime.utcnow", "datetime.datetime.today", "datetime.date.today",
    "time.time", "time.time_ns", "time.monotonic", "time.monotonic_ns", "time.perf_counter", "time.perf_counter_ns",
    "time.localtime", "time.gmtime", "time.ctime", "time.asctime",
    "pandas.Timestamp.now", "pandas.Timestamp.today", "pandas.Timestamp.utcnow",
})
#: Constructors that read the clock when handed these strings: pd.Timestamp("now"), np.datetime64("today").
CLOCK_WORDS = frozenset({"now", "today", "utcnow"})
CLOCK_PARSERS = frozenset({"pandas.Timestamp", "pandas.to_datetime", "numpy.datetime64", "pandas.DatetimeIndex"})


def _qualified(node: ast.expr, aliases: dict[str, str]) -> str | None:
    parts: list[str] = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    if not isinstance(node, ast.Name):
        return None
    parts.append(aliases.get(node.id, node.id))
    return ".".join(reversed(parts))


def clock_reads(source: str, filename: str = "<mapping>") -> list[str]:
    """Each place `source` reads the clock, as `line: name` (calls and references such as default_factory=datetime.now)."""
    tree = ast.parse(source, filename)
    aliases: dict[str, str] = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                aliases[alias.asname or alias.name.split(".")[0]] = alias.name if alias.asname else alias.name.split(".")[0]
        elif isinstance(node, ast.ImportFrom) and node.module:
            for alias in node.names:
                aliases[alias.asname or alias.name] = f"{node.module}.{alias.name}"
    found: list[str] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute | ast.Name) and not isinstance(getattr(node, "ctx", None), ast.Store):
            name = _qualified(node, aliases)
            if name in CLOCK_READS:
                found.append(f"{node.lineno}: {name}")
        if isinstance(node, ast.Call) and _qualified(node.func, aliases) in CLOCK_PARSERS:
            words = [a.value for a in node.args if isinstance(a, ast.Constant) and isinstance(a.value, str)]
            if any(w.strip().lower() in CLOCK_WORDS for w in words):
                found.append(f"{node.lineno}: {_qualified(node.func, aliases)}({words[0]!r})")
    return sorted(set(found), key=lambda entry: int(entry.split(":")[0]))


@pytest.mark.parametrize("path", sorted(MAPPINGS.rglob("*.py")), ids=lambda p: p.name)
def test_mapping_never_reads_the_clock(path: Path) -> None:
    assert clock_reads(path.read_text(encoding="utf-8"), str(path)) == [], f"{path.name} reads the clock: take `now` as a parameter"


def test_the_check_sees_every_way_of_reading_the_clock() -> None:
    source = """
import time as t
import pandas as pd
import numpy as np
from datetime import UTC, date, datetime as dt
from dataclasses import field

a = dt.now(UTC)
b = date.today()
c = t.monotonic()
d = pd.Timestamp.now(tz="UTC")
e = pd.Timestamp("now")
f = np.datetime64("today")
g = field(default_factory=dt.utcnow)
h = dt.fromisoformat("2026-01-01T00:00:00+00:00")  # parsing a given time is fine
"""
    assert [line.split(": ", 1)[0] for line in clock_reads(source)] == ["8", "9", "10", "11", "12", "13", "14"]
