"""The WhatsApp connector against the sandbox: sends, Meta error codes in the taxonomy, retries."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from connectors.core.config import RetryPolicy
from connectors.core.errors import (
    AuthenticationFailed,
    ErrorCategory,
    IntegrationError,
    InvalidRequest,
    RateLimitExceeded,
)
from connectors.core.metrics import METRICS
from connectors.whatsapp import (
    WhatsAppConnector,
    category_for_code,
    message_id,
    parse_meta_error,
)
from hub.core.settings import integration_config, reset_settings_cache
from hub.runtime.connections import build_whatsapp_connector
from sandbox.core import as_transport, running_server
from sandbox.whatsapp import WhatsAppSandbox

FAST = RetryPolicy(max_retries=3, base_delay_ms=1, max_delay_ms=5, jitter_ratio=0.0)


class Clock:
    def __init__(self) -> None:
        self.t = 1_800_000_000.0

    def __call__(self) -> float:
        return self.t


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def sandbox(clock: Clock) -> Iterator[WhatsAppSandbox]:
    sim = WhatsAppSandbox(clock=clock)
    sim.webhooks.auto_statuses = ()
    yield sim
    sim.close()


@pytest.fixture
def connector(sandbox: WhatsAppSandbox) -> Iterator[WhatsAppConnector]:
    with build_whatsapp_connector(transport=as_transport(sandbox), retry=FAST) as conn:
        assert isinstance(conn, WhatsAppConnector)
        yield conn


def test_base_url_defaults_to_graph_and_env_overrides(monkeypatch: pytest.MonkeyPatch) -> None:
    assert integration_config("whatsapp").base_url == "https://graph.facebook.com/v21.0/"
    monkeypatch.setenv("WHATSAPP_BASE_URL", "http://127.0.0.1:8403/v21.0/")
    reset_settings_cache()
    try:
        assert integration_config("whatsapp").base_url == "http://127.0.0.1:8403/v21.0/"
    finally:
        monkeypatch.delenv("WHATSAPP_BASE_URL")
        reset_settings_cache()


def test_send_template_and_text(connector: WhatsAppConnector, sandbox: WhatsAppSandbox) -> None:
    answer = connector.send_template("+919811111111", "order_update", body_params=["SO-4711"])
    assert answer["contacts"] == [{"input": "+919811111111", "wa_id": "919811111111"}]
    wamid = message_id(answer)
    assert sandbox.messages[wamid]["template"] == "order_update"
    sandbox.inbound("919822222222", "hello")
    text = connector.send_text("919822222222", "Your order SO-4711 is on its way")
    assert sandbox.messages[message_id(text)]["text"] == "Your order SO-4711 is on its way"
    assert connector.test_connection().ok


def test_outside_the_window_is_invalid_request_with_a_template_hint(connector: WhatsAppConnector) -> None:
    with pytest.raises(InvalidRequest) as info:
        connector.send_text("919833333333", "hi")
    assert info.value.code == "131047" and "template" in str(info.value)
    assert not info.value.transient


def test_pair_rate_limit_is_retried_with_backoff_until_it_clears(connector: WhatsAppConnector, sandbox: WhatsAppSandbox, clock: Clock) -> None:
    connector.send_template("919811111111", "hello_world")
    before = METRICS.total("whatsapp", "retries")
    real = connector.client._sleep

    def sleep(seconds: float) -> None:  # the backoff passes sandbox time
        clock.t += 3
        real(seconds)

    connector.client._sleep = sleep
    answer = connector.send_template("919811111111", "hello_world")
    assert message_id(answer).startswith("wamid.")
    assert METRICS.total("whatsapp", "retries") - before == 2


def test_throughput_limit_exhausts_retries_as_rate_limit_exceeded(connector: WhatsAppConnector, sandbox: WhatsAppSandbox) -> None:
    sandbox.throughput_per_s = 0
    with pytest.raises(RateLimitExceeded) as info:
        connector.send_template("919811111111", "hello_world")
    assert info.value.code == "130429" and info.value.status_code == 400 and info.value.transient


def test_bad_token_is_authentication_failed(sandbox: WhatsAppSandbox) -> None:
    sandbox.access_token = "rotated"
    with build_whatsapp_connector(transport=as_transport(sandbox), retry=FAST) as conn, pytest.raises(AuthenticationFailed) as info:
        conn.send_template("919811111111", "hello_world")
    assert info.value.code == "190"


@pytest.mark.parametrize(
    ("kwargs", "code"),
    [({"name": "no_such"}, "132001"), ({"name": "order_update"}, "132000"), ({"name": "hello_world", "language": "xx"}, "132001")],
)
def test_template_errors_are_invalid_request(connector: WhatsAppConnector, kwargs: dict[str, str], code: str) -> None:
    with pytest.raises(InvalidRequest) as info:
        connector.send_template("919811111111", **kwargs)
    assert info.value.code == code


def test_server_errors_are_retried(connector: WhatsAppConnector, sandbox: WhatsAppSandbox) -> None:
    sandbox.faults.update({"error_5xx_next_n": 2, "error_5xx_status": 500})
    assert message_id(connector.send_template("919811111111", "hello_world")).startswith("wamid.")


@pytest.mark.parametrize(
    ("code", "category"),
    [
        (0, ErrorCategory.AUTHENTICATION_FAILED), (190, ErrorCategory.AUTHENTICATION_FAILED),
        (4, ErrorCategory.RATE_LIMIT_EXCEEDED), (80007, ErrorCategory.RATE_LIMIT_EXCEEDED),
        (130429, ErrorCategory.RATE_LIMIT_EXCEEDED), (131056, ErrorCategory.RATE_LIMIT_EXCEEDED),
        (131048, ErrorCategory.RATE_LIMIT_EXCEEDED), (131000, ErrorCategory.SERVER_ERROR), (2, ErrorCategory.SERVER_ERROR),
        (100, ErrorCategory.INVALID_REQUEST), (131008, ErrorCategory.INVALID_REQUEST), (131009, ErrorCategory.INVALID_REQUEST),
        (131047, ErrorCategory.INVALID_REQUEST), (132000, ErrorCategory.INVALID_REQUEST), (132015, ErrorCategory.INVALID_REQUEST),
        (131026, None),
    ],
)
def test_code_table(code: int, category: ErrorCategory | None) -> None:
    assert category_for_code(code) == category


def test_parse_meta_error() -> None:
    body = {"error": {"message": "(#130429) Rate limit hit", "type": "OAuthException", "code": 130429, "error_data": {"details": "too many"}}}
    assert parse_meta_error(body) == ("130429", "(#130429) Rate limit hit: too many")
    assert parse_meta_error({"nope": 1}) == (None, None)


def test_missing_settings_fail_clearly(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WHATSAPP_PHONE_NUMBER_ID", "")
    reset_settings_cache()
    try:
        with pytest.raises(AuthenticationFailed, match="WHATSAPP_PHONE_NUMBER_ID"):
            build_whatsapp_connector()
    finally:
        monkeypatch.undo()
        reset_settings_cache()


def test_over_real_http(monkeypatch: pytest.MonkeyPatch) -> None:
    sim = WhatsAppSandbox()
    sim.webhooks.auto_statuses = ()
    try:
        with running_server(sim) as url:
            monkeypatch.setenv("WHATSAPP_BASE_URL", f"{url}/v21.0/")
            reset_settings_cache()
            with build_whatsapp_connector() as conn:
                assert isinstance(conn, WhatsAppConnector)
                assert message_id(conn.send_template("919811111111", "hello_world")) in sim.messages
                with pytest.raises(IntegrationError):
                    conn.send_text("919811111111", "")
    finally:
        monkeypatch.delenv("WHATSAPP_BASE_URL", raising=False)
        reset_settings_cache()
        sim.close()
