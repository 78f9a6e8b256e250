"""Monitoring fixtures: an injectable measurement clock, the SAP sandbox over real HTTP, local
notification sinks (an SMTP server and an HTTP sink) and a monitoring configuration routed to them."""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from email import message_from_bytes, policy
from email.message import EmailMessage
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs

import pytest
from aiosmtpd.controller import Controller

from connectors.core.config import RetryPolicy
from connectors.core.errors import IntegrationError
from connectors.core.metrics import METRICS
from connectors.sap.connector import SapConnector
from hub.core.db import get_engine
from hub.core.models import CallMetric, CallMetricTotal
from hub.core.settings import HubSettings, integration_config
from hub.monitoring.config import (
    ChannelsConfig,
    EmailChannel,
    MonitoringConfig,
    PagerDutyChannel,
    RoutingConfig,
    SmsChannel,
)
from hub.monitoring.health import stop_flusher
from hub.runtime.connections import build_sap_connector
from sandbox.core import running_server
from sandbox.sap import SapSandbox, partner_id

SLACK_PATH = "/services/T000/B000/slack-hook-secret"
TWILIO_SID = "AC0123456789abcdef0123456789abcdef"
TWILIO_TOKEN = "twilio-auth-token-secret"
PD_KEY = "pagerduty-routing-key-0123456789ab"
# The fake measurement clock starts 3 h before the real time, so error rows stamped with the real time
# are never older than the driven traffic.
START = datetime.now(UTC).replace(second=0, microsecond=0) - timedelta(hours=3)


class FakeClock:
    """The measurement clock (METRICS.clock): real calls, stamped at a time the test moves."""

    def __init__(self, start: datetime) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now.timestamp()

    def advance(self, **kwargs: float) -> datetime:
        self.now += timedelta(**kwargs)
        return self.now


@pytest.fixture
def fresh_metrics(db: str) -> Iterator[None]:
    """An empty database and an empty measurement buffer (nothing left over from other tests), and no
    background flusher of an earlier ingress or flow writing behind the test's back."""
    stop_flusher()  # its last flush writes what earlier tests measured: empty the tables after it
    METRICS.drain()
    with get_engine().begin() as conn:
        for table in (CallMetric.__table__, CallMetricTotal.__table__):
            conn.execute(table.delete())
    yield
    stop_flusher()
    METRICS.drain()


@pytest.fixture
def clock(fresh_metrics: None) -> Iterator[FakeClock]:
    """Measurements stamped by a fake clock the test moves (restored afterwards)."""
    fake = FakeClock(START)
    previous = METRICS.clock
    METRICS.clock = fake
    try:
        yield fake
    finally:
        METRICS.clock = previous


@dataclass
class SapTraffic:
    """Drive real calls through the SAP connector at the real sandbox; returns how many failed."""

    sandbox: SapSandbox
    connector: SapConnector
    errors: list[IntegrationError] = field(default_factory=list)

    def calls(self, n: int) -> int:
        failed = 0
        for i in range(n):
            try:
                self.connector.get_business_partner(partner_id(i % 20))
            except IntegrationError as exc:
                self.errors.append(exc)
                failed += 1
        return failed


@pytest.fixture
def sap_traffic(fresh_metrics: None) -> Iterator[SapTraffic]:
    """The SAP sandbox served over real HTTP, a connector without retries (one call = one measurement)."""
    sandbox = SapSandbox(partners=40, seed=3)
    with running_server(sandbox) as base_url:
        config = integration_config("sap").model_copy(
            update={"base_url": f"{base_url}/sap/opu/odata/sap/API_BUSINESS_PARTNER/", "rate_budget_per_s": 1000.0}
        )
        connector = build_sap_connector(config=config, retry=RetryPolicy(max_retries=0))
        try:
            yield SapTraffic(sandbox, connector)
        finally:
            connector.client.close()


@dataclass
class HttpSink:
    """A local HTTP server recording every request (method, path, headers, body); answers `status`."""

    url: str
    requests: list[dict[str, Any]]
    status: int = 200

    def json_bodies(self, path: str) -> list[Any]:
        return [json.loads(r["body"]) for r in self.requests if r["path"] == path]

    def forms(self, path: str) -> list[dict[str, str]]:
        return [{k: v[0] for k, v in parse_qs(r["body"].decode()).items()} for r in self.requests if r["path"] == path]


@pytest.fixture
def http_sink() -> Iterator[HttpSink]:
    records: list[dict[str, Any]] = []
    sink = HttpSink("", records)

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802 - http.server's naming
            length = int(self.headers.get("content-length") or 0)
            records.append({"method": "POST", "path": self.path, "headers": dict(self.headers.items()), "body": self.rfile.read(length)})
            body = b'{"status":"success","message":"Event processed","dedup_key":"x"}' if sink.status < 300 else b'{"error":"down"}'
            self.send_response(sink.status)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: Any) -> None:
            return

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    sink.url = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        yield sink
    finally:
        server.shutdown()
        server.server_close()


@dataclass
class SmtpSink:
    port: int
    messages: list[tuple[str, list[str], EmailMessage]]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def smtp_sink() -> Iterator[SmtpSink]:
    """A real SMTP server (aiosmtpd) on a free loopback port, keeping what it received."""
    received: list[tuple[str, list[str], EmailMessage]] = []

    class Handler:
        async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:  # noqa: N802 - aiosmtpd's naming
            message = message_from_bytes(envelope.content, policy=policy.default)
            received.append((envelope.mail_from, list(envelope.rcpt_tos), message))  # type: ignore[arg-type]
            return "250 OK"

    port = _free_port()
    controller = Controller(Handler(), hostname="127.0.0.1", port=port)
    controller.start()
    try:
        yield SmtpSink(port, received)
    finally:
        controller.stop()


def channels_config(http: HttpSink, smtp: SmtpSink, *, routing: RoutingConfig | None = None, **overrides: Any) -> MonitoringConfig:
    """The monitoring configuration with every channel pointed at the local sinks."""
    base: dict[str, Any] = {
        "integrations": ["sap", "razorpay", "whatsapp"],
        "routing": routing or RoutingConfig(),
        "channels": ChannelsConfig(
            email=EmailChannel(smtp_host="127.0.0.1", smtp_port=smtp.port, security="none",
                               from_addr="hub@drymix.example", to=["oncall@drymix.example", "lead@drymix.example"]),
            sms=SmsChannel(base_url=http.url, from_number="+15005550006", to=["+919800000001"]),
            pagerduty=PagerDutyChannel(events_url=f"{http.url}/v2/enqueue"),
        ),
    }
    base.update(overrides)
    return MonitoringConfig(**base)


def channel_settings(http: HttpSink) -> HubSettings:
    return HubSettings(
        twilio_account_sid=TWILIO_SID,
        twilio_auth_token=TWILIO_TOKEN,  # type: ignore[arg-type]
        slack_webhook_url=f"{http.url}{SLACK_PATH}",  # type: ignore[arg-type]
        pagerduty_routing_key=PD_KEY,  # type: ignore[arg-type]
    )
