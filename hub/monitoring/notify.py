"""Send one notification to the channels its severity is routed to (email, SMS, Slack, PagerDuty).

Routing and channel endpoints come from config/monitoring.toml (`[routing]`, `[channels.*]`), secrets
from the environment (HubSettings). A channel that fails or is not configured does not stop the others:
every routed channel yields one `Delivery` saying what happened. Nothing here raises for a delivery
problem (an alert that cannot be sent must not break the monitor flow); a bad severity does raise.

Email goes through apprise (it ships with Prefect and handles SMTP, STARTTLS/SSL and MIME). Slack, SMS
and PagerDuty are small httpx calls instead, on purpose: apprise's Slack, Twilio and PagerDuty plugins
rebuild their URLs against the vendor's fixed host (so they cannot reach a Twilio-compatible provider,
a Slack-compatible webhook or a test sink), and its PagerDuty plugin cannot send a `resolve` event for
a `dedup_key`, which the alert lifecycle needs.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote

import httpx

from connectors.core.redact import redact_text, register_secret, url_carries_credentials
from hub.core.settings import HubSettings, get_settings
from hub.monitoring.config import SEVERITIES, MonitoringConfig, monitoring_config

log = logging.getLogger(__name__)

_EMOJI = {"critical": ":red_circle:", "high": ":large_orange_circle:", "medium": ":large_yellow_circle:",
          "low": ":white_circle:", "info": ":information_source:"}


@dataclass(frozen=True)
class Delivery:
    """The outcome of one channel for one notification."""

    channel: str
    ok: bool
    detail: str
    skipped: bool = False


def notify(
    severity: str,
    title: str,
    body: str,
    *,
    dedupe_key: str | None = None,
    resolve: bool = False,
    config: MonitoringConfig | None = None,
    settings: HubSettings | None = None,
) -> list[Delivery]:
    """Deliver `title`/`body` to every channel routed for `severity`; one Delivery per routed channel.

    `dedupe_key` ties notifications about the same problem together: PagerDuty uses it as its
    `dedup_key` (so repeats update one incident and `resolve=True` closes it), email carries it in an
    `X-Drymix-Dedupe-Key`-style subject tag, Slack and SMS show it. `resolve=True` announces that the
    problem cleared. PagerDuty only ever receives critical notifications.
    """
    if severity not in SEVERITIES:
        raise ValueError(f"unknown severity {severity!r} (use one of {', '.join(SEVERITIES)})")
    cfg = config or monitoring_config()
    st = settings or get_settings()
    # A secret URL registers its parts too (Slack's path is its credential), so a remote's error text that
    # repeats only the path or the token is masked in details, logs and `drymix errors show` alike.
    for secret in (st.alert_smtp_password, st.twilio_auth_token, st.slack_webhook_url, st.pagerduty_routing_key):
        register_secret(secret.get_secret_value())
    for endpoint in (cfg.channels.pagerduty.events_url, cfg.channels.sms.base_url):
        if url_carries_credentials(endpoint):
            register_secret(endpoint)
    message = _Message(severity=severity, title=title, body=body, dedupe_key=dedupe_key, resolve=resolve)
    senders: dict[str, Callable[[_Message, MonitoringConfig, HubSettings], Delivery]] = {
        "email": _send_email, "sms": _send_sms, "slack": _send_slack, "pagerduty": _send_pagerduty,
    }
    deliveries: list[Delivery] = []
    for channel in cfg.routing.channels_for(severity):
        if channel == "pagerduty" and severity != "critical":
            deliveries.append(Delivery(channel, ok=False, skipped=True, detail="PagerDuty receives critical only"))
            continue
        try:
            delivery = senders[channel](message, cfg, st)
        except Exception as exc:  # one broken channel must not silence the others
            delivery = Delivery(channel, ok=False, detail=redact_text(f"{type(exc).__name__}: {exc}")[:500])
        if not delivery.ok and not delivery.skipped:
            log.warning("notification via %s failed: %s", channel, delivery.detail)
        deliveries.append(delivery)
    return deliveries


@dataclass(frozen=True)
class _Message:
    severity: str
    title: str
    body: str
    dedupe_key: str | None
    resolve: bool

    @property
    def subject(self) -> str:
        state = "RESOLVED" if self.resolve else self.severity.upper()
        return f"[DryMix {state}] {self.title}"

    @property
    def text(self) -> str:
        lines = [self.body]
        if self.dedupe_key:
            lines.append(f"key: {self.dedupe_key}")
        lines.append(f"at: {datetime.now(UTC).isoformat(timespec='seconds')}")
        return "\n".join(lines)


def _post_with_retry(send: Callable[[], httpx.Response], attempts: int = 2) -> httpx.Response:
    """One retry after a short pause for a transport error, 429 or 5xx (the next repeat covers the rest)."""
    for attempt in range(1, attempts + 1):
        try:
            response = send()
        except httpx.TransportError:
            if attempt == attempts:
                raise
            time.sleep(0.5)
            continue
        if (response.status_code == 429 or response.status_code >= 500) and attempt < attempts:
            time.sleep(0.5)
            continue
        return response
    raise AssertionError("unreachable")


def _http_result(channel: str, response: httpx.Response) -> Delivery:
    if response.is_success:
        return Delivery(channel, ok=True, detail=f"HTTP {response.status_code}")
    return Delivery(channel, ok=False, detail=redact_text(f"HTTP {response.status_code}: {response.text[:300]}"))


def _send_email(msg: _Message, cfg: MonitoringConfig, st: HubSettings) -> Delivery:
    import apprise  # lazy: apprise loads all its plugins on import

    email = cfg.channels.email
    if not email.to:
        return Delivery("email", ok=False, skipped=True, detail="no recipients ([channels.email] to)")
    scheme = "mailtos" if email.security in ("starttls", "ssl") else "mailto"
    auth = ""
    if st.alert_smtp_username:
        auth = f"{quote(st.alert_smtp_username, safe='')}:{quote(st.alert_smtp_password.get_secret_value(), safe='')}@"
    params: dict[str, Any] = {
        "smtp": email.smtp_host,
        "from": email.from_addr,
        "to": ",".join(email.to),
        "format": "text",
        "cto": email.timeout_s,
        "rto": email.timeout_s,
    }
    if email.security == "ssl":
        params["mode"] = "ssl"
    elif email.security == "starttls":
        params["mode"] = "starttls"
    query = "&".join(f"{k}={quote(str(v), safe='@,')}" for k, v in params.items())
    url = f"{scheme}://{auth}{email.smtp_host}:{email.smtp_port}/?{query}"
    client = apprise.Apprise()
    if not client.add(url):
        return Delivery("email", ok=False, detail="apprise refused the SMTP settings ([channels.email])")
    ok = bool(client.notify(title=msg.subject, body=msg.text))
    return Delivery("email", ok=ok, detail=f"sent to {len(email.to)} recipient(s)" if ok else "SMTP delivery failed")


def _send_sms(msg: _Message, cfg: MonitoringConfig, st: HubSettings) -> Delivery:
    sms = cfg.channels.sms
    token = st.twilio_auth_token.get_secret_value()
    if not (st.twilio_account_sid and token and sms.from_number and sms.to):
        return Delivery("sms", ok=False, skipped=True,
                        detail="not configured (TWILIO_ACCOUNT_SID, TWILIO_AUTH_TOKEN, [channels.sms] from_number/to)")
    url = f"{sms.base_url.rstrip('/')}/2010-04-01/Accounts/{quote(st.twilio_account_sid, safe='')}/Messages.json"
    text = f"{msg.subject}\n{msg.body}"
    if len(text) > sms.max_chars:
        text = text[: sms.max_chars - 1] + "…"
    results: list[Delivery] = []
    with httpx.Client(timeout=sms.timeout_s, auth=(st.twilio_account_sid, token)) as client:
        for number in sms.to:
            form = {"To": number, "From": sms.from_number, "Body": text}
            results.append(_http_result("sms", _post_with_retry(lambda f=form: client.post(url, data=f))))  # type: ignore[misc]
    failed = [r for r in results if not r.ok]
    if failed:
        return Delivery("sms", ok=False, detail=f"{len(failed)} of {len(results)} failed: {failed[0].detail}")
    return Delivery("sms", ok=True, detail=f"sent to {len(results)} number(s)")


def _send_slack(msg: _Message, cfg: MonitoringConfig, st: HubSettings) -> Delivery:
    url = st.slack_webhook_url.get_secret_value()
    if not url:
        return Delivery("slack", ok=False, skipped=True, detail="not configured (SLACK_WEBHOOK_URL)")
    icon = ":white_check_mark:" if msg.resolve else _EMOJI.get(msg.severity, "")
    payload = {
        "text": f"{icon} *{msg.subject}*\n{msg.text}",
        "blocks": [
            {"type": "header", "text": {"type": "plain_text", "text": msg.subject[:150]}},
            {"type": "section", "text": {"type": "mrkdwn", "text": msg.text[:2900]}},
        ],
    }
    with httpx.Client(timeout=cfg.channels.slack.timeout_s) as client:
        return _http_result("slack", _post_with_retry(lambda: client.post(url, json=payload)))


def _send_pagerduty(msg: _Message, cfg: MonitoringConfig, st: HubSettings) -> Delivery:
    pd = cfg.channels.pagerduty
    key = st.pagerduty_routing_key.get_secret_value()
    if not key:
        return Delivery("pagerduty", ok=False, skipped=True, detail="not configured (PAGERDUTY_ROUTING_KEY)")
    event: dict[str, Any] = {"routing_key": key, "event_action": "resolve" if msg.resolve else "trigger"}
    if msg.dedupe_key:
        event["dedup_key"] = msg.dedupe_key[:255]
    elif msg.resolve:
        return Delivery("pagerduty", ok=False, detail="a resolve event needs a dedupe_key")
    if not msg.resolve:
        event["payload"] = {
            "summary": msg.title[:1024],
            "source": pd.source,
            "severity": "critical",
            "timestamp": datetime.now(UTC).isoformat(),
            "custom_details": {"body": msg.body},
        }
    with httpx.Client(timeout=pd.timeout_s) as client:
        return _http_result("pagerduty", _post_with_retry(lambda: client.post(pd.events_url, json=event)))
