"""A response's body is freed with its last reference, not left for the cyclic garbage collector.

httpx binds the stream it read to its response (a reference cycle); `IntegrationClient.send_once` replaces the
consumed stream by the bytes it read. A sync that held every page's body until a collection reached it peaked
~30 MB higher (bench/sap_sync.py).
"""

from __future__ import annotations

import gc
import weakref
from collections.abc import Iterator

import httpx
import pytest

from connectors.core.client import IntegrationClient
from connectors.core.config import IntegrationConfig, RetryPolicy

BODY = {"d": {"results": [{"BusinessPartner": str(n), "Name": "x" * 50} for n in range(200)]}}


@pytest.fixture
def collector_off() -> Iterator[None]:
    was = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was:
            gc.enable()


def _client() -> IntegrationClient:
    config = IntegrationConfig(name="probe", base_url="http://probe.test/", retry=RetryPolicy(max_retries=0, base_delay_ms=0))
    return IntegrationClient(config, transport=httpx.MockTransport(lambda request: httpx.Response(200, json=BODY)), sleep=lambda _s: None)


def test_a_response_dies_with_its_last_reference_and_keeps_its_body(collector_off: None) -> None:
    with _client() as client:
        response = client.request("GET", "items", operation="read_items")
        assert response.json() == BODY and response.content == httpx.Response(200, json=BODY).content
        assert response.is_closed
        gone = weakref.ref(response)
        del response
        assert gone() is None  # freed by its reference count, with the collector off


def test_get_json_leaves_no_response_behind(collector_off: None, monkeypatch: pytest.MonkeyPatch) -> None:
    made: list[weakref.ref[httpx.Response]] = []
    original = httpx.Client.send

    def send(self: httpx.Client, request: httpx.Request, **kwargs: object) -> httpx.Response:
        response = original(self, request, **kwargs)  # type: ignore[arg-type]
        made.append(weakref.ref(response))
        return response

    monkeypatch.setattr(httpx.Client, "send", send)
    with _client() as client:
        for _ in range(5):
            assert client.get_json("items", operation="read_items") == BODY
    assert len(made) == 5 and all(ref() is None for ref in made)
