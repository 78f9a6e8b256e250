"""`drymix whatsapp send` against the in-process WhatsApp sandbox: sends, records, refusals, bursts."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest
from sqlalchemy import select
from typer.testing import CliRunner

from connectors.core.client import use_transport
from connectors.core.metrics import METRICS
from hub.cli.main import app
from hub.core.db import get_engine
from hub.core.models import WhatsAppMessage
from hub.ledger.errors import list_errors
from sandbox.core import as_transport
from sandbox.whatsapp import WhatsAppSandbox

runner = CliRunner()


@pytest.fixture
def whatsapp(db: str) -> Iterator[WhatsAppSandbox]:
    sim = WhatsAppSandbox()  # no webhook URL: statuses stay in the sandbox
    with use_transport("whatsapp", as_transport(sim)):
        yield sim
    sim.close()


def messages() -> list[dict[str, object]]:
    with get_engine().connect() as conn:
        return [dict(r._mapping) for r in conn.execute(select(WhatsAppMessage.__table__)).all()]


def test_template_is_sent_recorded_and_its_wamid_printed(whatsapp: WhatsAppSandbox) -> None:
    result = runner.invoke(app, ["whatsapp", "send", "--to", "+919811111111", "--template", "order_update", "--lang", "en_US", "--param", "SO-4711"])
    assert result.exit_code == 0, result.output
    [wamid] = list(whatsapp.messages)
    assert wamid in result.output
    assert whatsapp.messages[wamid]["template"] == "order_update"
    [row] = messages()
    assert (row["wamid"], row["direction"], row["status"], row["message_type"]) == (wamid, "outbound", "accepted", "template")
    assert (row["recipient"], row["sender"], row["template_name"], row["body"]) == ("919811111111", "100000000000001", "order_update", '["SO-4711"]')


def test_text_inside_the_window_with_json_output(whatsapp: WhatsAppSandbox) -> None:
    whatsapp.inbound("+919822222222", "Is my order dispatched?")
    result = runner.invoke(app, ["whatsapp", "send", "--to", "+919822222222", "--text", "Dispatched today.", "--json"])
    assert result.exit_code == 0, result.output
    out = json.loads(result.stdout.strip().splitlines()[-1])
    assert out["failed"] == [] and [m["to"] for m in out["sent"]] == ["+919822222222"]
    assert out["sent"][0]["wamid"] in whatsapp.messages
    [row] = messages()
    assert (row["message_type"], row["body"]) == ("text", "Dispatched today.")


def test_text_outside_the_window_is_refused_with_the_template_hint_and_recorded(whatsapp: WhatsAppSandbox) -> None:
    result = runner.invoke(app, ["whatsapp", "send", "--to", "+919833333333", "--text", "Hello again", "--json"])
    assert result.exit_code == 1
    out = json.loads(result.stdout.strip().splitlines()[-1])
    assert out["sent"] == []
    [failure] = out["failed"]
    assert (failure["category"], failure["code"]) == ("INVALID_REQUEST", "131047")
    assert "send an approved template instead" in failure["message"]
    assert whatsapp.messages == {} and messages() == []
    [row] = list_errors(integration="whatsapp")
    assert (row.id, row.dataset, row.error_type, row.error_code) == (failure["error_id"], "whatsapp_messages", "INVALID_REQUEST", "131047")
    assert row.unit == {"to": "+919833333333", "type": "text", "template": None, "text_chars": 11}
    # The human form names the category, the code and the hint too.
    human = runner.invoke(app, ["whatsapp", "send", "--to", "+919833333333", "--text", "Hello again"])
    assert human.exit_code == 1
    assert "INVALID_REQUEST [131047]" in human.output and "template" in human.output


def test_a_burst_queues_in_the_rate_budget_instead_of_hitting_the_throughput_limit(whatsapp: WhatsAppSandbox) -> None:
    whatsapp.throughput_per_s = 5  # the sandbox refuses a sixth send within one second with 130429
    recipients = [f"+9198444444{i:02d}" for i in range(8)]
    limited_before = METRICS.total("whatsapp", "rate_limited")
    args = ["whatsapp", "send", "--template", "hello_world", "--rate-per-s", "2", "--json"]
    for number in recipients:
        args += ["--to", number]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    out = json.loads(result.stdout.strip().splitlines()[-1])
    assert [m["to"] for m in out["sent"]] == recipients and out["failed"] == []
    assert METRICS.total("whatsapp", "rate_limited") == limited_before  # the budget waited; Meta never refused
    assert len(whatsapp.messages) == 8 and len(messages()) == 8


@pytest.mark.parametrize(
    "args",
    [
        ["--to", "+919811111111"],
        ["--to", "+919811111111", "--text", "a", "--template", "hello_world"],
        ["--to", "+919811111111", "--text", "a", "--param", "x"],
        ["--to", "9811111111", "--text", "a"],
    ],
)
def test_usage_errors_exit_2_and_send_nothing(whatsapp: WhatsAppSandbox, args: list[str]) -> None:
    result = runner.invoke(app, ["whatsapp", "send", *args])
    assert result.exit_code == 2
    assert whatsapp.messages == {} and list_errors(integration="whatsapp") == []
