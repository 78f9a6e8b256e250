"""Razorpay's payments list is offset-paged (count/skip, newest first): prove a read cannot skip a payment
that existed when it started, whatever happens in the account while it reads (issue 12's class of bug)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from connectors.core.config import RetryPolicy
from connectors.razorpay import RazorpayConnector
from hub.runtime.connections import build_razorpay_connector
from sandbox.core import as_transport
from sandbox.razorpay import RazorpaySandbox

FAST = RetryPolicy(max_retries=3, base_delay_ms=1, max_delay_ms=5, jitter_ratio=0.0)


class Clock:
    def __init__(self) -> None:
        self.now = 1_780_000_000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def sandbox(clock: Clock) -> Iterator[RazorpaySandbox]:
    sim = RazorpaySandbox(clock=clock)
    yield sim
    sim.close()


@pytest.fixture
def connector(sandbox: RazorpaySandbox) -> Iterator[RazorpayConnector]:
    with build_razorpay_connector(transport=as_transport(sandbox), retry=FAST, page_size=10) as conn:
        assert isinstance(conn, RazorpayConnector)
        yield conn


def pay(sandbox: RazorpaySandbox, clock: Clock, n: int, outcome: str = "captured") -> list[str]:
    ids = []
    for i in range(n):
        clock.now += 1
        order = sandbox.create_order({"amount": 10_000 + i, "currency": "INR", "receipt": f"R-{clock.now:.0f}-{i}"})
        ids.append(sandbox.pay(order["id"], outcome)["razorpay_payment_id"])
    return ids


def test_payments_created_or_changed_while_a_window_is_read_skip_nothing_inside_it(
    sandbox: RazorpaySandbox, clock: Clock, connector: RazorpayConnector
) -> None:
    before = pay(sandbox, clock, 45)
    until = int(clock.now)
    read: list[str] = []
    for number, page in enumerate(connector.payments_since(0, until), start=1):
        read += [p["id"] for p in page.records]
        if number == 2:
            # New payments land after the fixed window's end (`to`), refunds and captures change a
            # payment's status but never its created_at: the offsets inside the window cannot move.
            pay(sandbox, clock, 7)
            sandbox.refund(before[3], {"amount": 100})
            clock.now = until  # even a payment created in the window's last second ...
            pay(sandbox, clock, 1)
    assert set(before) <= set(read)  # ... only shifts rows down (read twice), never skips one
    assert len(read) >= len(before)


def test_a_payment_created_in_the_windows_last_second_is_read_twice_not_lost(
    sandbox: RazorpaySandbox, clock: Clock, connector: RazorpayConnector
) -> None:
    before = pay(sandbox, clock, 25)
    until = int(clock.now) + 1
    read: list[str] = []
    pages = iter(connector.payments_since(0, until))
    first = next(pages)
    read += [p["id"] for p in first.records]
    clock.now = until - 1
    late = pay(sandbox, clock, 1)  # inside the window and the newest: offset 0, pushing every row down one
    read += [p["id"] for page in pages for p in page.records]
    assert set(before) <= set(read)
    assert len(read) == len(before) + 1 and len(set(read)) == len(before)  # one row read twice, the late one next run
    assert late[0] not in read
