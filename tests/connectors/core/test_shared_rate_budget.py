"""The connector core's RateBudget takes from a pluggable shared budget (a Prefect rate limit under a server)."""

from __future__ import annotations

import subprocess
import sys

from connectors.core.client import RateBudget, set_shared_rate_limiter
from hub.core.settings import ROOT


def test_named_budget_takes_one_shared_unit_per_call_after_the_local_token() -> None:
    taken: list[str] = []
    previous = set_shared_rate_limiter(taken.append)
    try:
        budget = RateBudget(1000.0, name="sap")
        for _ in range(3):
            budget.acquire()
        RateBudget(1000.0).acquire()  # unnamed: local budget only
    finally:
        set_shared_rate_limiter(previous)
    assert taken == ["sap", "sap", "sap"]


def test_without_a_shared_limiter_only_the_local_budget_applies() -> None:
    previous = set_shared_rate_limiter(None)
    try:
        clock = [0.0]
        slept: list[float] = []

        def sleep(s: float) -> None:
            slept.append(s)
            clock[0] += s

        budget = RateBudget(2.0, name="sap", clock=lambda: clock[0])
        for _ in range(4):
            budget.acquire(sleep)
    finally:
        set_shared_rate_limiter(previous)
    assert round(sum(slept), 3) == 1.0  # burst of 2, then 2 more at 2/s


def test_connectors_do_not_import_prefect() -> None:
    code = (
        "import sys, connectors.core.client, connectors.sap, connectors.razorpay, connectors.whatsapp;"
        "bad = [m for m in sys.modules if m == 'prefect' or m.startswith('prefect.')];"
        "print(bad); sys.exit(1 if bad else 0)"
    )
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stdout + done.stderr
