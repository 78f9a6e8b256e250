"""`drymix razorpay checkout-callback` against the in-process Razorpay sandbox: what the ERP calls, its exit codes."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from typer.testing import CliRunner

from connectors.core.client import use_transport
from connectors.razorpay import RazorpayConnector
from hub.cli.main import app
from hub.core.db import get_engine
from hub.runtime.connections import build_razorpay_connector
from hub.systems.razorpay import get_payment, record_order
from sandbox.core import as_transport
from sandbox.razorpay import RazorpaySandbox
from tests.error_support import error_rows

runner = CliRunner()


@pytest.fixture
def razorpay(db: str) -> Iterator[RazorpaySandbox]:
    sim = RazorpaySandbox()
    with use_transport("razorpay", as_transport(sim)):
        yield sim
    sim.close()


def paid_order(sim: RazorpaySandbox, receipt: str, *, store: bool = True) -> dict[str, Any]:
    """An order created through the connector (stored as the ERP does), paid at the sandbox's checkout."""
    with build_razorpay_connector() as rzp:
        assert isinstance(rzp, RazorpayConnector)
        order = rzp.create_order(18_500, receipt)
    if store:
        with get_engine().begin() as conn:
            record_order(conn, order)
    with httpx.Client(transport=as_transport(sim), base_url="https://api.razorpay.test") as control:
        return dict(control.post("/_sandbox/razorpay/pay", json={"order_id": order["id"]}).json())


def callback(paid: dict[str, Any], *extra: str, signature: str | None = None, stdin: str | None = None) -> Any:
    args = ["razorpay", "checkout-callback", "--order", paid["razorpay_order_id"], "--payment", paid["razorpay_payment_id"],
            "--signature", signature or paid["razorpay_signature"], *extra]
    return runner.invoke(app, args, input=stdin)


def test_genuine_callback_exits_0_and_reports_json(razorpay: RazorpaySandbox) -> None:
    paid = paid_order(razorpay, "INV-CLI-1")
    result = callback(paid, "--json")
    assert result.exit_code == 0, result.output
    out = json.loads(result.stdout.strip().splitlines()[-1])
    assert (out["outcome"], out["verified"], out["payment_status"], out["order_status"]) == ("recorded", True, "authorized", "attempted")
    assert paid["razorpay_signature"] not in result.output
    with get_engine().connect() as conn:
        stored = get_payment(conn, paid["razorpay_order_id"])
    assert stored is not None and stored["payment_id"] == paid["razorpay_payment_id"]
    again = callback(paid, "--json")
    assert again.exit_code == 0 and json.loads(again.stdout.strip().splitlines()[-1])["outcome"] == "duplicate"


def test_signature_from_stdin(razorpay: RazorpaySandbox) -> None:
    paid = paid_order(razorpay, "INV-CLI-2")
    result = callback(paid, signature="-", stdin=paid["razorpay_signature"] + "\n")
    assert result.exit_code == 0, result.output
    assert "recorded" in result.output


def test_forged_callback_exits_1_and_names_the_error_row(razorpay: RazorpaySandbox) -> None:
    paid = paid_order(razorpay, "INV-CLI-3")
    forged = "f" * 64
    result = callback(paid, signature=forged)
    assert result.exit_code == 1, result.output
    [error] = error_rows("razorpay", "payments")
    assert f"drymix errors show {error.id}" in result.output
    assert forged not in result.output and error.error_type == "DATA_VALIDATION_FAILED"


def test_unknown_order_exits_3_and_empty_values_exit_2(razorpay: RazorpaySandbox) -> None:
    paid = paid_order(razorpay, "INV-CLI-4", store=False)
    result = callback(paid, "--json")
    assert result.exit_code == 3, result.output
    assert json.loads(result.stdout.strip().splitlines()[-1])["outcome"] == "unknown_order"
    assert callback(paid, signature=" ").exit_code == 2


def test_missing_key_secret_exits_4_as_a_credentials_error_not_a_refusal(razorpay: RazorpaySandbox, monkeypatch: pytest.MonkeyPatch) -> None:
    from hub.core.settings import reset_settings_cache

    paid = paid_order(razorpay, "INV-CLI-5")
    monkeypatch.setenv("RAZORPAY_KEY_SECRET", "")
    reset_settings_cache()
    try:
        result = callback(paid, "--json")
    finally:
        monkeypatch.undo()
        reset_settings_cache()
    assert result.exit_code == 4, result.output
    out = json.loads(result.stdout.strip().splitlines()[-1])
    assert (out["outcome"], out["verified"], out["category"]) == ("error", False, "AUTHENTICATION_FAILED")
    assert [e.error_type for e in error_rows("razorpay")] == ["AUTHENTICATION_FAILED"]
    with get_engine().connect() as conn:
        stored = get_payment(conn, paid["razorpay_order_id"])
    assert stored is not None and stored["payment_status"] == "created"
