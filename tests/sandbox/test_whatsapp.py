"""The WhatsApp sandbox answers like the Cloud API send endpoint and delivers signed status webhooks like Meta."""

from __future__ import annotations

import hashlib
import hmac
import json
import threading
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from sandbox.core import SandboxRequest, SandboxResponse, Simulator, as_transport, running_server
from sandbox.whatsapp import WhatsAppSandbox

TOKEN = "sandbox-whatsapp-token"
PHONE_ID = "100000000000001"
BASE = "https://graph.facebook.test"
SEND = f"/v21.0/{PHONE_ID}/messages"


class Receiver(Simulator):
    """A webhook endpoint that records deliveries and can refuse the first N."""

    name = "receiver"

    def __init__(self, refuse_first: int = 0) -> None:
        super().__init__()
        self.refuse_first = refuse_first
        self.received: list[tuple[dict[str, str], bytes]] = []
        self._count = 0
        self._guard = threading.Lock()

    def handle(self, req: SandboxRequest) -> SandboxResponse:
        with self._guard:
            self._count += 1
            if self._count <= self.refuse_first:
                return SandboxResponse.json(503, {"error": "busy"})
            self.received.append(({k.lower(): v for k, v in req.headers.items()}, req.body))
        return SandboxResponse.json(200, {"ok": True})

    def statuses(self) -> list[tuple[str, str]]:
        out = []
        for _, body in self.received:
            value = json.loads(body)["entry"][0]["changes"][0]["value"]
            out += [(s["id"], s["status"]) for s in value.get("statuses", [])]
        return out


class Clock:
    def __init__(self) -> None:
        self.t = 1_800_000_000.0

    def __call__(self) -> float:
        return self.t


@pytest.fixture
def receiver() -> Receiver:
    return Receiver()


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def sandbox(receiver: Receiver, clock: Clock) -> Iterator[WhatsAppSandbox]:
    sim = WhatsAppSandbox(webhook_url="http://receiver.test/hook", webhook_transport=as_transport(receiver), clock=clock)
    yield sim
    sim.close()


@pytest.fixture
def client(sandbox: WhatsAppSandbox) -> Iterator[httpx.Client]:
    with httpx.Client(transport=as_transport(sandbox), base_url=BASE, headers={"Authorization": f"Bearer {TOKEN}"}) as c:
        yield c


def template(to: str = "+919811111111", name: str = "order_update", params: list[str] = ["SO-4711"]) -> dict[str, Any]:  # noqa: B006
    return {
        "messaging_product": "whatsapp", "to": to, "type": "template",
        "template": {"name": name, "language": {"code": "en_US"},
                     "components": [{"type": "body", "parameters": [{"type": "text", "text": p} for p in params]},
                                    {"type": "button", "sub_type": "quick_reply", "index": "0", "parameters": [{"type": "payload", "payload": "ACK"}]}]},
    }


def text(to: str = "919811111111", body: str = "Your order shipped") -> dict[str, Any]:
    return {"messaging_product": "whatsapp", "recipient_type": "individual", "to": to, "type": "text", "text": {"body": body, "preview_url": False}}


def error_of(response: httpx.Response) -> dict[str, Any]:
    error = dict(response.json()["error"])
    assert set(error) >= {"message", "type", "code", "error_data", "fbtrace_id"}
    assert error["message"].startswith(f"(#{error['code']}) ")
    assert error["error_data"]["messaging_product"] == "whatsapp" and error["error_data"]["details"]
    return error


def test_template_send_has_the_documented_shape_and_delivers_signed_statuses(client: httpx.Client, sandbox: WhatsAppSandbox, receiver: Receiver) -> None:
    response = client.post(SEND, json=template())
    assert response.status_code == 200, response.text
    answer = response.json()
    assert answer["messaging_product"] == "whatsapp"
    assert answer["contacts"] == [{"input": "+919811111111", "wa_id": "919811111111"}]
    wamid = answer["messages"][0]["id"]
    assert wamid.startswith("wamid.") and answer["messages"][0]["message_status"] == "accepted"
    assert sandbox.wait_for_deliveries(5)
    assert receiver.statuses() == [(wamid, "sent"), (wamid, "delivered"), (wamid, "read")]
    for headers, body in receiver.received:
        expected = "sha256=" + hmac.new(b"sandbox-app-secret", body, hashlib.sha256).hexdigest()
        assert headers["x-hub-signature-256"] == expected and headers["content-type"] == "application/json"
        payload = json.loads(body)
        assert payload["object"] == "whatsapp_business_account"
        change = payload["entry"][0]["changes"][0]
        assert change["field"] == "messages" and change["value"]["metadata"]["phone_number_id"] == PHONE_ID
        status = change["value"]["statuses"][0]
        assert status["recipient_id"] == "919811111111" and status["timestamp"].isdigit()
        assert status["conversation"]["origin"]["type"] == "utility" and status["pricing"]["billable"] is True
    assert [d.event_id for d in sandbox.deliveries] == [f"status:{wamid}:{s}" for s in ("sent", "delivered", "read")]


def test_bad_token_is_190_with_401(sandbox: WhatsAppSandbox) -> None:
    with httpx.Client(transport=as_transport(sandbox), base_url=BASE, headers={"Authorization": "Bearer wrong"}) as bad:
        response = bad.post(SEND, json=template())
    assert response.status_code == 401 and error_of(response)["code"] == 190
    with httpx.Client(transport=as_transport(sandbox), base_url=BASE) as none:
        assert none.post(SEND, json=template()).status_code == 401


def test_free_form_text_needs_the_customer_to_have_written_within_24_hours(client: httpx.Client, sandbox: WhatsAppSandbox, clock: Clock, receiver: Receiver) -> None:
    refused = client.post(SEND, json=text())
    assert refused.status_code == 400 and error_of(refused)["code"] == 131047
    inbound = client.post("/_sandbox/whatsapp/inbound", json={"from": "+919811111111", "text": "Where is my order?"})
    assert inbound.status_code == 200 and inbound.json()["event_id"].startswith("message:wamid.")
    assert client.post(SEND, json=text()).status_code == 200
    clock.t += 24 * 3600 + 1
    late = client.post(SEND, json=text())
    assert late.status_code == 400 and error_of(late)["code"] == 131047
    assert sandbox.wait_for_deliveries(5)
    first = json.loads(receiver.received[0][1])["entry"][0]["changes"][0]["value"]
    assert first["messages"][0]["text"] == {"body": "Where is my order?"} and first["contacts"][0]["wa_id"] == "919811111111"


def test_pair_rate_limit_is_131056_and_clears_after_six_seconds(client: httpx.Client, clock: Clock) -> None:
    assert client.post(SEND, json=template()).status_code == 200
    clock.t += 2
    again = client.post(SEND, json=template())
    assert again.status_code == 400 and error_of(again)["code"] == 131056
    assert client.post(SEND, json=template(to="919822222222")).status_code == 200  # another recipient is fine
    clock.t += 4
    assert client.post(SEND, json=template()).status_code == 200


def test_throughput_limit_is_130429(sandbox: WhatsAppSandbox, client: httpx.Client, clock: Clock) -> None:
    sandbox.throughput_per_s = 3
    sandbox.webhooks.auto_statuses = ()
    for n in range(3):
        assert client.post(SEND, json=template(to=f"9198000000{n:02d}")).status_code == 200
    over = client.post(SEND, json=template(to="919800000099"))
    assert over.status_code == 400 and error_of(over)["code"] == 130429
    clock.t += 1
    assert client.post(SEND, json=template(to="919800000099")).status_code == 200


@pytest.mark.parametrize(
    ("body", "code"),
    [
        ({"to": "919811111111", "type": "text", "text": {"body": "x"}}, 100),
        ({**template(), "to": "not-a-number"}, 100),
        ({**text(), "type": "sticker"}, 100),
        ({**text(), "text": {}}, 100),
        (template(name="no_such_template"), 132001),
        (template(params=[]), 132000),
        ({**template(), "template": {"language": {"code": "en_US"}}}, 131008),
        ({**template(), "template": {"name": "order_update", "language": {"code": "en_US"}, "components": [{"type": "body", "parameters": [{"type": "emoji"}]}]}}, 131009),
    ],
)
def test_invalid_requests_get_meta_error_codes(client: httpx.Client, body: dict[str, Any], code: int) -> None:
    response = client.post(SEND, json=body)
    assert response.status_code == 400 and error_of(response)["code"] == code


def test_unknown_phone_number_id_is_100(client: httpx.Client) -> None:
    response = client.post("/v21.0/999/messages", json=template())
    assert response.status_code == 400 and error_of(response)["code"] == 100


def test_shared_fault_switches_use_meta_envelopes(client: httpx.Client) -> None:
    assert client.post("/_sandbox/faults", json={"rate_limit_every_n": 1}).status_code == 200
    limited = client.post(SEND, json=template())
    assert limited.status_code == 429 and error_of(limited)["code"] == 4
    assert client.put("/_sandbox/faults", json={"error_5xx_every_n": 1, "error_5xx_status": 503}).status_code == 200
    down = client.post(SEND, json=template())
    assert down.status_code == 503 and error_of(down)["code"] == 2
    assert client.put("/_sandbox/faults", json={"expire_tokens": True}).status_code == 200
    expired = client.post(SEND, json=template())
    assert expired.status_code == 401 and error_of(expired)["code"] == 190
    client.delete("/_sandbox/faults")
    assert client.post(SEND, json=template()).status_code == 200


def test_retries_non_2xx_then_delivers(clock: Clock) -> None:
    receiver = Receiver(refuse_first=2)
    sim = WhatsAppSandbox(webhook_url="http://receiver.test/hook", webhook_transport=as_transport(receiver), clock=clock)
    try:
        sim.webhooks.auto_statuses = ("sent",)
        sim.send(template())
        assert sim.wait_for_deliveries(5)
        assert sim.deliveries[0].statuses == [503, 503, 200] and sim.deliveries[0].state == "delivered"
        assert len(receiver.received) == 1
    finally:
        sim.close()


def test_duplicate_and_out_of_order_switches(client: httpx.Client, sandbox: WhatsAppSandbox, receiver: Receiver) -> None:
    switched = client.post("/_sandbox/whatsapp/webhooks", json={"duplicate": True, "out_of_order": True})
    assert switched.status_code == 200 and switched.json()["duplicate"] is True
    wamid = client.post(SEND, json=template()).json()["messages"][0]["id"]
    assert client.post("/_sandbox/whatsapp/deliveries/wait", json={"timeout_s": 5}).json() == {"done": True}
    assert receiver.statuses() == [(wamid, s) for s in ("read", "read", "delivered", "delivered", "sent", "sent")]
    assert client.post("/_sandbox/whatsapp/webhooks", json={"bogus": 1}).status_code == 422
    assert client.post("/_sandbox/whatsapp/webhooks", json={"auto_statuses": ["lost"]}).status_code == 422


def test_failed_status_carries_the_error(client: httpx.Client, sandbox: WhatsAppSandbox, receiver: Receiver) -> None:
    sandbox.webhooks.auto_statuses = ("sent",)
    wamid = client.post(SEND, json=template()).json()["messages"][0]["id"]
    pushed = client.post("/_sandbox/whatsapp/status", json={"wamid": wamid, "status": "failed"})
    assert pushed.status_code == 200 and pushed.json()["event_id"] == f"status:{wamid}:failed"
    assert sandbox.wait_for_deliveries(5)
    last = json.loads(receiver.received[-1][1])["entry"][0]["changes"][0]["value"]["statuses"][0]
    assert last["status"] == "failed" and last["errors"][0]["code"] == 131026
    assert client.post("/_sandbox/whatsapp/status", json={"wamid": "wamid.nope", "status": "read"}).status_code == 400


def test_real_http_server() -> None:
    sim = WhatsAppSandbox()
    try:
        with running_server(sim) as url, httpx.Client(base_url=url, headers={"Authorization": f"Bearer {TOKEN}"}) as c:
            sim.webhooks.auto_statuses = ()
            response = c.post(SEND, json=template())
            assert response.status_code == 200 and response.json()["messages"][0]["id"].startswith("wamid.")
            assert "POST /_sandbox/whatsapp/inbound" in " ".join(c.get("/_sandbox").json()["routes"])
    finally:
        sim.close()
