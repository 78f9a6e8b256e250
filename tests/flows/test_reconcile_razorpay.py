"""Reconciliation fills what webhooks missed, forward-only, with its watermark written with the rows."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session

from connectors.core.client import use_transport
from connectors.razorpay import RazorpayConnector
from data_mappings.payments import update_from_payment
from hub.core.db import get_engine
from hub.core.models import IntegrationErrorRow
from hub.ledger.loading import read_cursor, write_cursor
from hub.runtime.connections import build_razorpay_connector
from hub.systems.razorpay import apply_update, get_payment, record_order
from sandbox.core import as_transport
from sandbox.razorpay import RazorpaySandbox
from tests.error_support import FailingRequests, error_rows, make_due, unit_of

pytestmark = pytest.mark.usefixtures("prefect_harness")


@pytest.fixture
def razorpay(db: str) -> Iterator[RazorpaySandbox]:
    sim = RazorpaySandbox()  # no webhook URL: nothing is delivered, as when Razorpay gave up
    with use_transport("razorpay", as_transport(sim)):
        yield sim
    sim.close()


def reconcile(**params: Any) -> dict[str, Any]:
    from flows.reconcile_razorpay import reconcile_razorpay

    return reconcile_razorpay(**params)


def new_order(receipt: str, amount: int = 25_000) -> dict[str, Any]:
    with build_razorpay_connector() as conn:
        assert isinstance(conn, RazorpayConnector)
        order = conn.create_order(amount, receipt)
    with get_engine().begin() as db:
        record_order(db, order)
    return order


def row(order_id: str) -> dict[str, Any]:
    with get_engine().connect() as conn:
        found = get_payment(conn, order_id)
    assert found is not None
    return found


def test_reconciliation_fills_a_dropped_webhook_and_writes_the_watermark(razorpay: RazorpaySandbox) -> None:
    order = new_order("INV-R-1")
    assert row(order["id"])["payment_status"] == "created"
    paid = razorpay.pay(order["id"], "captured")
    assert razorpay.wait_for_deliveries(5)
    summary = reconcile(page_size=2)
    assert summary["applied"] == 1
    stored = row(order["id"])
    assert (stored["payment_status"], stored["order_status"], stored["source"]) == ("captured", "paid", "reconciliation")
    assert stored["payment_id"] == paid["razorpay_payment_id"] and stored["receipt"] == "INV-R-1"
    with get_engine().connect() as conn:
        assert read_cursor(conn, "razorpay", "payments") == {"since": summary["until"]}
    again = reconcile(overlap_s=3600)
    assert again["since"] == summary["until"] - 3600
    assert (again["records"], again["applied"], again["stale"]) == (1, 0, 1)


def test_reconciliation_never_moves_a_row_back(razorpay: RazorpaySandbox) -> None:
    order = new_order("INV-R-2")
    paid = razorpay.pay(order["id"], "authorized")
    captured = dict(paid["payment"], status="captured", captured=True)
    with get_engine().begin() as conn:
        # The webhook already said captured; the API snapshot still says authorized.
        apply_update(conn, update_from_payment(captured, source="webhook", event_id="evt_cap"))
    reconcile()
    stored = row(order["id"])
    assert (stored["payment_status"], stored["source"], stored["last_event_id"]) == ("captured", "webhook", "evt_cap")


def test_many_payments_over_several_pages(razorpay: RazorpaySandbox) -> None:
    orders = [new_order(f"INV-P-{i}", 1000 + i) for i in range(5)]
    for order in orders:
        razorpay.pay(order["id"], "failed")
    summary = reconcile(page_size=2)
    assert (summary["pages"], summary["records"], summary["applied"]) == (3, 5, 5)
    assert {row(o["id"])["payment_status"] for o in orders} == {"failed"}
    assert row(orders[0]["id"])["error_code"] == "BAD_REQUEST_ERROR"


def test_a_failed_run_records_the_error_and_keeps_the_watermark(razorpay: RazorpaySandbox) -> None:
    razorpay.faults.update({"expire_tokens": True})
    with pytest.raises(Exception, match="Authentication failed"):
        reconcile()
    with get_engine().connect() as conn:
        assert read_cursor(conn, "razorpay", "payments") is None
    with Session(get_engine()) as session:
        errors = list(session.scalars(select(IntegrationErrorRow)))
    assert [(e.integration, e.dataset, e.error_type) for e in errors] == [("razorpay", "payments", "AUTHENTICATION_FAILED")]


def test_reconciliation_records_refunds_the_webhooks_missed_partial_then_full(razorpay: RazorpaySandbox) -> None:
    order = new_order("INV-R-REF", amount=20_000)
    payment_id = razorpay.pay(order["id"], "captured")["razorpay_payment_id"]
    with build_razorpay_connector() as conn:
        assert isinstance(conn, RazorpayConnector)
        conn.refund_payment(payment_id, 5_000)
        reconcile()
        assert (row(order["id"])["payment_status"], row(order["id"])["amount_refunded"]) == ("captured", 5_000)
        conn.refund_payment(payment_id)
    reconcile()
    assert (row(order["id"])["payment_status"], row(order["id"])["amount_refunded"]) == ("refunded", 20_000)
    # An older picture of the payment (captured, nothing refunded) cannot take the refund back.
    stale = {**razorpay.payments[payment_id], "status": "captured", "amount_refunded": 0, "refund_status": None}
    with get_engine().begin() as db:
        assert apply_update(db, update_from_payment(stale, source="reconciliation")) == "stale"
    assert (row(order["id"])["payment_status"], row(order["id"])["amount_refunded"]) == ("refunded", 20_000)


def test_a_failed_page_is_queued_and_its_rerun_reads_the_window_from_that_page_on(razorpay: RazorpaySandbox) -> None:
    from hub.ledger.errors import get_error
    from hub.ledger.retry_units import rerun

    orders = [new_order(f"INV-Q-{i}", 2000 + i) for i in range(5)]
    for order in orders:
        razorpay.pay(order["id"], "captured")

    def second_page(request: httpx.Request) -> bool:
        return request.url.path.endswith("/payments") and request.url.params.get("skip") == "2"

    api = FailingRequests(razorpay, second_page)
    with use_transport("razorpay", api):
        with pytest.raises(Exception, match="SERVER_ERROR"):
            reconcile(page_size=2)
        [error] = error_rows("razorpay", "payments")
        unit = unit_of(error)
        assert (unit["kind"], unit["batch"]) == ("razorpay.payments.page", 2) and "skip=2" in unit["position"]["url"]
        assert (error.error_type, error.status) == ("SERVER_ERROR", "pending") and error.next_retry_at is not None
        assert sorted(row(o["id"])["payment_status"] for o in orders).count("captured") == 2  # page 1 committed
        with get_engine().connect() as conn:
            assert read_cursor(conn, "razorpay", "payments") is None  # the watermark did not move

        api.failing = False
        reads = len(api.seen("GET", "/payments"))
        make_due(error.id)
        outcome = rerun(error.id, by="flow:retry-failed-units")
    assert outcome.status == "resolved" and outcome.summary is not None
    assert (outcome.summary["pages"], outcome.summary["records"], outcome.summary["applied"]) == (2, 3, 3)
    rerun_reads = api.seen("GET", "/payments")[reads:]
    assert [httpx.URL(u).params.get("skip") for u in rerun_reads] == ["2", "4"]  # page 1 was not read again
    assert {row(o["id"])["payment_status"] for o in orders} == {"captured"}
    with get_engine().connect() as conn:
        assert read_cursor(conn, "razorpay", "payments") == {"since": unit["until"]}  # the whole window is in now
    assert get_error(error.id).status == "resolved" and len(error_rows("razorpay")) == 1


def test_a_rerun_of_an_older_window_never_moves_the_watermark_back(razorpay: RazorpaySandbox) -> None:
    from hub.ledger.retry_units import rerun

    order = new_order("INV-Q-OLD")
    razorpay.pay(order["id"], "captured")
    api = FailingRequests(razorpay, lambda request: request.url.path.endswith("/payments"))
    with use_transport("razorpay", api):
        with pytest.raises(Exception, match="SERVER_ERROR"):
            reconcile()
        [error] = error_rows("razorpay", "payments")
        later = unit_of(error)["until"] + 600
        with get_engine().begin() as conn:  # a later run, reading a later window, moved the watermark meanwhile
            write_cursor(conn, "razorpay", "payments", {"since": later}, flow_run_id="later-run")
        api.failing = False
        make_due(error.id)
        assert rerun(error.id, by="flow:retry-failed-units").status == "resolved"
    with get_engine().connect() as conn:
        assert read_cursor(conn, "razorpay", "payments") == {"since": later}
    assert row(order["id"])["payment_status"] == "captured"


def test_a_genuine_event_refused_as_stale_at_the_door_is_recovered_by_reconciliation(razorpay: RazorpaySandbox) -> None:
    """Razorpay's manual replay of a 2-day-old event is past the freshness horizon: the ingress refuses it
    (counted as stale_event), and the next reconciliation applies the payment's real state instead."""
    import time

    import orjson

    from hub.ingress.app import create_app
    from tests.hub.ingress.conftest import hub_settings, razorpay_headers, rejections, serving

    order = new_order("INV-R-STALE")
    paid = razorpay.pay(order["id"], "captured")
    payment = {"id": paid["razorpay_payment_id"], "entity": "payment", "amount": 25_000, "currency": "INR", "status": "captured",
               "order_id": order["id"], "method": "upi", "captured": True, "created_at": int(time.time()) - 2 * 86_400}
    body = orjson.dumps({"entity": "event", "account_id": "acc_x", "event": "payment.captured", "contains": ["payment"],
                         "payload": {"payment": {"entity": payment}}, "created_at": int(time.time()) - 2 * 86_400})
    with serving(create_app(hub_settings())) as base:
        refused = httpx.post(f"{base}/webhooks/razorpay", content=body, headers=razorpay_headers(body), timeout=10)
    assert refused.status_code == 422 and refused.json() == {"error": "stale_event"}
    assert rejections("stale_event", "razorpay") == 1 and row(order["id"])["payment_status"] == "created"
    assert reconcile()["applied"] == 1
    assert (row(order["id"])["payment_status"], row(order["id"])["source"]) == ("captured", "reconciliation")


def test_the_run_summary_artifact_shows_the_reconciliation_s_own_figures(razorpay: RazorpaySandbox) -> None:
    """Run on the sync engine, reconciliation publishes the common summary plus its applied/stale counts."""
    import json

    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey

    order = new_order("INV-R-ART")
    razorpay.pay(order["id"], "captured")
    summary = reconcile()
    with get_client(sync_client=True) as client:
        artifacts = client.read_artifacts(artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=["razorpay-payments-sync-summary"])))
    [mine] = [a for a in artifacts if str(a.flow_run_id) == summary["flow_run_id"]]
    table = mine.data if isinstance(mine.data, list) else json.loads(mine.data)
    figures = {row["figure"]: row["value"] for row in table}
    assert figures["applied"] == "1" and figures["stale"] == "0" and figures["Pages"] == str(summary["pages"])
    assert figures["until"] == str(summary["until"])
