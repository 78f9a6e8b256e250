"""End to end over real HTTP: a template through the connector, signed status webhooks from the sandbox into
the ingress, the processing flow, and the ERP message read."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest
from sqlalchemy import select

from connectors.whatsapp import WhatsAppConnector, message_id
from hub.core.db import get_engine
from hub.core.models import WebhookEvent
from hub.core.settings import get_settings, reset_settings_cache
from hub.ingress.app import create_app
from hub.runtime.connections import build_whatsapp_connector
from hub.systems.whatsapp import get_message, record_sent
from sandbox.core import running_server
from sandbox.whatsapp import WhatsAppSandbox
from tests.hub.ingress.conftest import hub_settings, serving

pytestmark = pytest.mark.usefixtures("prefect_harness")

APP_SECRET = "sandbox-app-secret"


@pytest.fixture
def wired(db: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[WhatsAppSandbox, str]]:
    """The ingress and the WhatsApp sandbox on real sockets, the sandbox delivering to the ingress."""
    app = create_app(hub_settings(whatsapp_app_secrets=APP_SECRET))
    sandbox = WhatsAppSandbox(app_secret=APP_SECRET)
    try:
        with serving(app) as ingress, running_server(sandbox) as api:
            sandbox.webhooks.url = f"{ingress}/webhooks/whatsapp"
            monkeypatch.setenv("WHATSAPP_BASE_URL", f"{api}/v21.0/")
            reset_settings_cache()
            yield sandbox, api
    finally:
        monkeypatch.delenv("WHATSAPP_BASE_URL", raising=False)
        reset_settings_cache()
        sandbox.close()


def send_and_record(connector: WhatsAppConnector, to: str) -> str:
    answer = connector.send_template(to, "order_update", body_params=["SO-4711"])
    with get_engine().begin() as conn:
        return record_sent(conn, answer, phone_number_id=get_settings().whatsapp_phone_number_id,
                           message_type="template", template_name="order_update", body="SO-4711")


def test_template_sent_through_the_connector_ends_read_in_the_erp(wired: tuple[WhatsAppSandbox, str]) -> None:
    from flows.process_webhooks import process_webhooks

    sandbox, api = wired
    with build_whatsapp_connector() as connector:
        assert isinstance(connector, WhatsAppConnector)
        wamid = send_and_record(connector, "+919811111111")
    with httpx.Client(base_url=api) as control:
        assert control.post("/_sandbox/whatsapp/deliveries/wait", json={"timeout_s": 10}).json() == {"done": True}
    assert [d.state for d in sandbox.deliveries] == ["delivered"] * 3
    with get_engine().connect() as conn:
        stored = dict(conn.execute(select(WebhookEvent.event_id, WebhookEvent.status)).all())
    assert stored == {f"status:{wamid}:{s}": "received" for s in ("sent", "delivered", "read")}

    summary = process_webhooks()
    assert (summary["claimed"], summary["applied"], summary["failed"]) == (3, 3, 0)
    with get_engine().connect() as conn:
        row = get_message(conn, wamid)
    assert row is not None
    assert (row["status"], row["recipient"], row["template_name"], row["direction"]) == ("read", "919811111111", "order_update", "outbound")
    assert row["sent_at"] is not None and row["delivered_at"] is not None and row["read_at"] is not None


def test_duplicated_out_of_order_statuses_still_end_read_once(wired: tuple[WhatsAppSandbox, str]) -> None:
    from flows.process_webhooks import process_webhooks

    sandbox, api = wired
    sandbox.webhooks.duplicate = True
    sandbox.webhooks.out_of_order = True
    with build_whatsapp_connector() as connector:
        assert isinstance(connector, WhatsAppConnector)
        wamid = send_and_record(connector, "919822222222")
    assert sandbox.wait_for_deliveries(10)
    with get_engine().connect() as conn:
        assert len(conn.execute(select(WebhookEvent.id)).all()) == 3  # six deliveries, three events
    summary = process_webhooks()
    # read arrives first and wins; delivered and sent only fill in their times.
    assert (summary["claimed"], summary["applied"], summary["stale"], summary["failed"]) == (3, 1, 2, 0)
    with get_engine().connect() as conn:
        row = get_message(conn, wamid)
    assert row is not None and row["status"] == "read" and row["last_event_id"] == f"status:{wamid}:read"


def test_customer_writes_in_then_a_free_form_reply_is_allowed(wired: tuple[WhatsAppSandbox, str]) -> None:
    from flows.process_webhooks import process_webhooks

    sandbox, api = wired
    sandbox.webhooks.auto_statuses = ()
    with httpx.Client(base_url=api) as control:
        inbound = control.post("/_sandbox/whatsapp/inbound", json={"from": "919833333333", "text": "Where is SO-4711?"}).json()
        assert control.post("/_sandbox/whatsapp/deliveries/wait", json={"timeout_s": 10}).json() == {"done": True}
    with build_whatsapp_connector() as connector:
        assert isinstance(connector, WhatsAppConnector)
        reply = connector.send_text("919833333333", "It ships today", reply_to=inbound["id"])
    assert message_id(reply) in sandbox.messages
    assert process_webhooks()["applied"] == 1
    with get_engine().connect() as conn:
        row = get_message(conn, inbound["id"])
    assert row is not None and (row["direction"], row["body"]) == ("inbound", "Where is SO-4711?")
