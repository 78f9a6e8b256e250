"""The monitoring listener serves /metrics (Prometheus text, parsed with prometheus_client's parser), the
status API and /dashboard, which headless Chromium renders with real data; it needs its token, and the
public webhook port serves none of it."""

from __future__ import annotations

import re
import shutil
import subprocess
from collections.abc import Iterator
from functools import partial
from html.parser import HTMLParser

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from hub.ingress.app import create_app
from hub.ingress.observability import create_monitor_app
from hub.ledger.errors import record_error
from hub.monitoring.alerting import run_alerts
from hub.monitoring.config import RoutingConfig
from hub.monitoring.health import flush_metrics
from hub.monitoring.notify import notify
from tests.hub.ingress.conftest import hub_settings, razorpay_body, razorpay_headers, serving
from tests.hub.monitoring.conftest import HttpSink, SapTraffic, SmtpSink, channel_settings, channels_config

MONITOR_TOKEN = "monitor-token-for-tests-0123456789"
AUTH = {"authorization": f"Bearer {MONITOR_TOKEN}"}


@pytest.fixture
def ingress(sap_traffic: SapTraffic) -> Iterator[str]:
    with serving(create_app(hub_settings())) as url:
        yield url


@pytest.fixture
def monitor(sap_traffic: SapTraffic) -> Iterator[str]:
    """The monitoring listener, on its own address, with a token."""
    with serving(create_monitor_app(hub_settings(monitor_token=MONITOR_TOKEN))) as url:
        yield url


def drive(sap_traffic: SapTraffic, ingress: str) -> None:
    """Real traffic: 20 SAP calls (5 failing with 503, 2 rate limited), 3 signed webhooks, 1 refused."""
    sap_traffic.sandbox.faults.update({"error_5xx_every_n": 4, "error_5xx_status": 503})
    assert sap_traffic.calls(12) == 3
    sap_traffic.sandbox.faults.clear()
    sap_traffic.sandbox.faults.update({"rate_limit_next_n": 2, "retry_after_s": 0})
    assert sap_traffic.calls(8) == 2
    with httpx.Client(base_url=ingress) as client:
        for i in range(3):
            body = razorpay_body(payment_id=f"pay_metrics{i:05d}")
            assert client.post("/webhooks/razorpay", content=body, headers=razorpay_headers(body)).status_code == 200
        refused = client.post("/webhooks/razorpay", content=b"{}", headers={"content-type": "application/json", "x-razorpay-signature": "bad"})
        assert refused.status_code in (400, 401, 403)


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    out: dict[tuple[str, tuple[tuple[str, str], ...]], float] = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def test_metrics_endpoint_exposes_prometheus_text_with_the_driven_counts(sap_traffic: SapTraffic, ingress: str, monitor: str) -> None:
    drive(sap_traffic, ingress)
    response = httpx.get(f"{monitor}/metrics", headers=AUTH)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain; version=0.0.4")
    got = samples(response.text)
    call = (("integration", "sap"), ("operation", "read_partner"))
    assert got[("drymix_connector_calls_total", (*call, ("outcome", "success")))] == 15
    assert got[("drymix_connector_calls_total", (*call, ("outcome", "error")))] == 5
    assert got[("drymix_connector_rate_limited_total", call)] == 2
    assert got[("drymix_connector_call_duration_seconds_count", call)] == 20
    assert got[("drymix_connector_call_duration_seconds_bucket", tuple(sorted((*call, ("le", "+Inf")))))] == 20
    buckets = [v for (name, labels), v in got.items() if name == "drymix_connector_call_duration_seconds_bucket"]
    assert buckets == sorted(buckets)  # cumulative
    assert got[("drymix_webhook_requests_total", (("outcome", "success"), ("provider", "razorpay")))] == 4  # a refusal is answered, not failed
    assert got[("drymix_webhook_inbox_backlog", (("provider", "razorpay"),))] == 3
    assert got[("drymix_integration_health", (("health", "red"), ("integration", "sap")))] == 1
    assert ("drymix_connector_last_success_timestamp_seconds", (("integration", "sap"),)) in got
    # Names follow the conventions: snake_case, a drymix_ prefix, _total counters, _seconds units.
    for name, _ in got:
        assert re.fullmatch(r"drymix_[a-z0-9_]+", name), name


def test_status_api_has_every_figure_and_refuses_a_bad_window(sap_traffic: SapTraffic, ingress: str, monitor: str) -> None:
    drive(sap_traffic, ingress)
    payload = httpx.get(f"{monitor}/api/monitor/status", params={"window": "5m"}, headers=AUTH).json()
    sap = next(i for i in payload["integrations"] if i["integration"] == "sap")
    assert (sap["calls"], sap["errors"], sap["rate_limited"]) == (20, 5, 2)
    for key in ("success_rate", "error_rate", "p50_s", "p95_s", "p99_s", "last_success_at", "last_error_at", "uptime_pct",
                "throughput_per_s", "webhook_backlog", "pending_retries", "webhook_processing_p95_s", "cache_hit_rate", "health"):
        assert key in sap
    razorpay = next(i for i in payload["integrations"] if i["integration"] == "razorpay")
    assert razorpay["webhook_backlog"] == 3 and razorpay["webhooks_received"] == 4
    bad = httpx.get(f"{monitor}/api/monitor/status", params={"window": "soon"}, headers=AUTH)
    assert bad.status_code == 400 and "not understood" in bad.json()["error"]


@pytest.mark.parametrize("path", ["/metrics", "/dashboard", "/api/monitor/status"])
def test_monitoring_is_private_not_on_the_webhook_port_and_only_with_the_token(ingress: str, monitor: str, path: str) -> None:
    assert httpx.get(f"{ingress}{path}").status_code == 404  # the public port serves webhooks and /health only
    anonymous = httpx.get(f"{monitor}{path}")
    assert anonymous.status_code == 401 and anonymous.headers["www-authenticate"].startswith("Basic")
    assert httpx.get(f"{monitor}{path}", headers={"authorization": "Bearer not-the-token"}).status_code == 401
    assert httpx.get(f"{monitor}{path}", headers=AUTH).status_code == 200
    # A browser's Basic prompt (any user name, the token as password) and Prometheus' basic_auth work too.
    assert httpx.get(f"{monitor}{path}", auth=("prometheus", MONITOR_TOKEN)).status_code == 200
    assert httpx.get(f"{monitor}{path}", auth=("prometheus", "guess")).status_code == 401


def test_a_monitoring_listener_off_loopback_refuses_to_start_without_a_token() -> None:
    with pytest.raises(ValueError, match="MONITOR_TOKEN"):
        create_monitor_app(hub_settings(), host="0.0.0.0", token="")
    assert create_monitor_app(hub_settings(), host="0.0.0.0", token=MONITOR_TOKEN) is not None


class _Dom(HTMLParser):
    """Collects elements' attributes and the page text from Chromium's serialised DOM."""

    def __init__(self) -> None:
        super().__init__()
        self.elements: list[tuple[str, dict[str, str | None]]] = []
        self.text: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.elements.append((tag, dict(attrs)))

    def handle_data(self, data: str) -> None:
        self.text.append(data)


@pytest.mark.skipif(shutil.which("chromium") is None, reason="Debian's chromium package is not installed (make test installs it)")
def test_dashboard_renders_health_alerts_errors_and_latency_charts_in_headless_chromium(
    sap_traffic: SapTraffic, ingress: str, http_sink: HttpSink, smtp_sink: SmtpSink
) -> None:
    # Chromium cannot send a bearer header on a page load: this listener is loopback without a token,
    # which the monitoring app allows on loopback only (the auth itself is proven above).
    drive(sap_traffic, ingress)
    error_id = record_error(sap_traffic.errors[0], integration="sap", dataset="customers", unit={"batch": 2})
    cfg = channels_config(http_sink, smtp_sink, routing=RoutingConfig(high=["slack"], medium=["slack"], critical=["slack"]))
    flush_metrics()
    run = run_alerts(config=cfg, notifier=partial(notify, config=cfg, settings=channel_settings(http_sink)))
    assert "HighErrorRate/sap" in run.fired

    with serving(create_monitor_app(hub_settings(), token="")) as monitor:
        result = subprocess.run(
            ["chromium", "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
             "--virtual-time-budget=15000", "--dump-dom", f"{monitor}/dashboard"],
            capture_output=True, text=True, timeout=120, check=False,
        )
    assert result.returncode == 0, result.stderr[-2000:]
    dom = _Dom()
    dom.feed(result.stdout)
    body = next(attrs for tag, attrs in dom.elements if tag == "body")
    assert body.get("data-ready") == "1", "the page's script fetched the status and drew it"
    cards = {attrs["data-integration"]: attrs["data-health"] for tag, attrs in dom.elements if tag == "div" and "card" in (attrs.get("class") or "").split()}
    assert cards["sap"] == "red" and cards["whatsapp"] == "idle"  # no traffic: grey, never green
    # The SLA panel: every SLA of the shipped table; razorpay's signed webhooks (3 stored, 1 refused: a correct
    # answer) are verify-payment's traffic, all good against 99.9 %.
    sla_cells = {attrs["data-sla"] for tag, attrs in dom.elements if tag == "td" and attrs.get("data-sla")}
    assert sla_cells >= {"razorpay.create_order", "razorpay.verify_payment", "sap.sync_customer", "plant_opcua.read_status"}
    sla_section = result.stdout[result.stdout.index('id="sla"'):result.stdout.index('id="figures"')]
    verify_row = sla_section[sla_section.index('data-sla="razorpay.verify_payment"'):].split("</tr>")[0]
    assert '<td class="availability met">100.000 %</td>' in verify_row and "<td>99.9 %</td>" in verify_row
    assert '<td class="budget">100.0 %</td>' in verify_row
    assert "no traffic" in sla_section  # SLAs without calls say so instead of a made-up figure
    charts = [attrs for tag, attrs in dom.elements if tag == "div" and attrs.get("class") == "chart"]
    assert {c["data-integration"] for c in charts} >= {"sap", "razorpay", "whatsapp"}
    assert any(tag == "polyline" for tag, _ in dom.elements), "the sap latency chart has a line"
    text = " ".join(dom.text)
    assert "HighErrorRate" in text and "error rate 25.0%" in text
    assert str(error_id) in text and "SERVER_ERROR" in text
    assert '<span id="problem"></span>' in result.stdout, "no load error shown"
