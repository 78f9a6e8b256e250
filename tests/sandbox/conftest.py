"""Fixtures shared by the sandbox tests."""

from __future__ import annotations

import socket
from collections.abc import Iterator

import pytest


@pytest.fixture
def port_taken_before_binding(monkeypatch: pytest.MonkeyPatch) -> Iterator[int]:
    """A port another process holds, which the plant simulators' free_port() picks first (then any free one)."""
    import sandbox.plant as plant

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = int(taken.getsockname()[1])
        picks = iter([port])
        real_free_port = plant.free_port
        monkeypatch.setattr(plant, "free_port", lambda host="127.0.0.1": next(picks, None) or real_free_port(host))
        yield port
