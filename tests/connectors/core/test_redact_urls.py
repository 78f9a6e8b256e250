"""Secrets inside URLs are masked wherever text could be stored or printed, also when a remote's error
text repeats only a part of the URL (a Slack webhook's path, its token, a key in a query string)."""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import quote

import pytest

from connectors.core.redact import (
    MASK,
    RedactingFilter,
    redact_mapping,
    redact_text,
    register_secret,
    secret_url_parts,
    url_carries_credentials,
)

TEAM, BOT, TOKEN = "T0REDACT1", "B0REDACT2", "xoxbRedactTokenZ9y8x7w6v5u4"
SLACK = f"https://hooks.slack.com/services/{TEAM}/{BOT}/{TOKEN}"


def test_every_part_of_a_registered_slack_url_is_masked_wherever_it_is_repeated() -> None:
    register_secret(SLACK)
    for text in (
        f"POST {SLACK} failed",
        f"no_service: /services/{TEAM}/{BOT}/{TOKEN}",
        f"invalid_token {TOKEN}",
        f"url=hooks.slack.com/services/{TEAM}/{BOT}/{TOKEN}",
        f"escaped {quote(SLACK, safe='')}",
        f'{{"error":"channel_not_found","url":"{SLACK}"}}',
    ):
        masked = redact_text(text)
        assert TOKEN not in masked and quote(TOKEN, safe="") not in masked, masked
        assert MASK in masked
    assert redact_text("the services are back") == "the services are back"  # plain words are not secrets


def test_unregistered_webhook_urls_and_keys_in_text_are_masked_by_shape() -> None:
    assert "zzSecretPath" not in redact_text("posting to https://hooks.slack.com/services/T1/B2/zzSecretPath failed")
    assert "abcdef123456" not in redact_text("GET https://example.com/hook?token=abcdef123456&page=2")
    masked = redact_text('{"routing_key": "0123456789abcdef0123456789abcdef", "event_action": "trigger"}')
    assert "0123456789abcdef" not in masked and '"event_action": "trigger"' in masked
    assert "R0ut1ngK3y" not in redact_text("integration_key=R0ut1ngK3y")


def test_secret_url_parts_and_which_endpoints_carry_credentials() -> None:
    parts = secret_url_parts(SLACK)
    assert f"{TEAM}/{BOT}/{TOKEN}" in parts and TOKEN in parts and "services" not in parts
    assert "s3cr3tvalue" in secret_url_parts("https://example.com/x?key=s3cr3tvalue")
    assert url_carries_credentials("https://events.pagerduty.com/integration/0123456789abcdef0123456789abcdef/enqueue")
    assert url_carries_credentials("https://api.example.com/v1?api_key=abc")
    assert not url_carries_credentials("https://events.pagerduty.com/v2/enqueue")


def test_logs_and_stored_details_mask_the_url_parts() -> None:
    register_secret(SLACK)
    record = logging.LogRecord("hub", logging.WARNING, __file__, 1, "slack said %s", (f"no_service /services/{TEAM}/{BOT}/{TOKEN}",), None)
    RedactingFilter().filter(record)
    assert TOKEN not in record.getMessage()
    details = redact_mapping({"deliveries": [{"channel": "slack", "detail": f"HTTP 404: unknown webhook {TOKEN}"}]})
    assert TOKEN not in repr(details)


@pytest.fixture
def echoing_remote() -> Iterator[str]:
    """A Slack-compatible remote that refuses every webhook and repeats the path it was called on (and its token)."""

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802 - http.server's naming
            self.rfile.read(int(self.headers.get("content-length") or 0))
            token = self.path.rsplit("/", 1)[-1]
            body = f"no_service: the webhook {self.path} (token {token}) is disabled".encode()
            self.send_response(404)
            self.send_header("content-length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: Any) -> None:
            return

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def test_a_failed_slack_delivery_does_not_repeat_the_webhook_path_or_token(echoing_remote: str) -> None:
    from hub.core.settings import HubSettings
    from hub.monitoring.config import MonitoringConfig, RoutingConfig
    from hub.monitoring.notify import notify

    token = "EchoedSlackToken0123456789abcd"
    url = f"{echoing_remote}/services/T0ECHO001/B0ECHO002/{token}"
    config = MonitoringConfig(integrations=["sap"], routing=RoutingConfig(high=["slack"]))
    [delivery] = notify("high", "SlowResponseTime: sap", "p95 over 2 s", config=config,
                        settings=HubSettings(slack_webhook_url=url))  # type: ignore[arg-type]
    assert delivery.channel == "slack" and not delivery.ok
    assert "HTTP 404" in delivery.detail and "no_service" in delivery.detail
    assert token not in delivery.detail and "T0ECHO001/B0ECHO002" not in delivery.detail
