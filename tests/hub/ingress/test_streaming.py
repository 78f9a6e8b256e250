"""Oversize bodies are refused before they are read whole (driven at the ASGI level, counting chunks pulled)."""

from __future__ import annotations

import asyncio
from typing import Any

from hub.ingress.app import create_app
from tests.hub.ingress.conftest import hub_settings, rejections, stored_events

CHUNK = 16 * 1024
TOTAL_CHUNKS = 640  # 10 MiB offered against a 64 KiB limit


def _drive(headers: list[tuple[bytes, bytes]]) -> tuple[int, int]:
    """POST a 10 MiB body chunk by chunk; returns (status, chunks the app pulled)."""
    app = create_app(hub_settings())
    pulled = 0
    status = 0

    async def receive() -> dict[str, Any]:
        nonlocal pulled
        pulled += 1
        return {"type": "http.request", "body": b"x" * CHUNK, "more_body": pulled < TOTAL_CHUNKS}

    async def send(message: dict[str, Any]) -> None:
        nonlocal status
        if message["type"] == "http.response.start":
            status = message["status"]

    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": "/webhooks/razorpay",
        "raw_path": b"/webhooks/razorpay",
        "root_path": "",
        "query_string": b"",
        "headers": [(b"content-type", b"application/json"), (b"x-razorpay-signature", b"a" * 64), *headers],
        "client": ("127.0.0.1", 50000),
        "server": ("127.0.0.1", 8480),
    }

    async def run() -> None:
        await app(scope, receive, send)
        await app.state.writer.aclose()

    asyncio.run(run())
    return status, pulled


def test_declared_oversize_body_is_refused_without_reading_any_of_it(db: str) -> None:
    status, pulled = _drive([(b"content-length", str(CHUNK * TOTAL_CHUNKS).encode())])
    assert status == 413 and pulled == 0
    assert stored_events() == 0 and rejections("body_too_large") == 1


def test_undeclared_oversize_body_stops_being_read_past_the_limit(db: str) -> None:
    status, pulled = _drive([])  # chunked: no Content-Length to judge by
    assert status == 413
    assert pulled <= 64 * 1024 // CHUNK + 1  # a chunk past the limit, never the 10 MiB
    assert stored_events() == 0 and rejections("body_too_large") == 1
