"""Manual review: quarantined rows replayed through a fixed suite are loaded and close their error; the rest
are discarded with a reason; everything is audited and nothing is loaded twice or over newer data."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from connectors.core.client import use_transport
from hub.core.db import get_engine
from hub.core.models import Customer, IntegrationErrorRow, QuarantinedRecord
from hub.ledger.errors import error_events, get_error
from hub.ledger.quarantine import NothingSelected, discard, failure_summary, list_quarantine, replay
from sandbox.core import as_transport
from sandbox.sap import SapSandbox

pytestmark = pytest.mark.usefixtures("prefect_harness")


@pytest.fixture
def synced(db: str) -> int:
    """A full SAP sync whose dirty partners were quarantined; returns its DATA_VALIDATION_FAILED error id."""
    from flows.sync_sap_customers import sync_sap_customers

    sandbox = SapSandbox(partners=400, seed=3, max_page_size=200)
    with use_transport("sap", as_transport(sandbox)):
        summary = sync_sap_customers()
    assert summary["quarantined"] > 0
    with Session(get_engine()) as session:
        [error] = session.scalars(select(IntegrationErrorRow).where(IntegrationErrorRow.error_type == "DATA_VALIDATION_FAILED")).all()
    return int(error.id)


@pytest.fixture
def email_rule_relaxed(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """The 'fix': the analysts agree the e-mail format rule was too strict (any non-blank text passes now)."""
    import expectations.customers as suite
    from expectations import runner

    monkeypatch.setattr(suite, "EMAIL_PATTERN", r"\S")
    runner.reset()  # the runner caches suites per process: drop it so the current code is used
    yield
    monkeypatch.undo()
    runner.reset()


def open_rows(error_id: int) -> list[QuarantinedRecord]:
    return list_quarantine(error_id=error_id, limit=10_000)


def customer_ids() -> set[str]:
    with get_engine().connect() as conn:
        return set(conn.execute(select(Customer.customer_id)).scalars())


def only_email(row: QuarantinedRecord) -> bool:
    return all(f.get("column") == "email" for f in row.failed_expectations)


def test_quarantined_rows_are_linked_to_their_error_with_their_failed_expectations(synced: int) -> None:
    rows = open_rows(synced)
    assert len(rows) == get_error(synced).response_data["rows_quarantined"]  # type: ignore[index]
    assert all(r.error_id == synced for r in rows)
    email = [r for r in rows if only_email(r)]
    assert email, "the sandbox's invalid e-mails are quarantined"
    assert "match_regex(email)=" in failure_summary(email[0].failed_expectations)


def test_replay_after_a_suite_fix_loads_the_rows_that_now_pass_and_discard_closes_the_error(synced: int, email_rule_relaxed: None) -> None:
    before = open_rows(synced)
    fixed = {r.record_key for r in before if only_email(r)}
    loaded_before = customer_ids()
    assert not fixed & loaded_before

    result = replay(error_id=synced, by="priya", reason="email.format relaxed after review (ticket DM-42)")
    assert result.selected == len(before)
    assert result.loaded + result.superseded + result.still_failing == result.selected
    assert result.superseded == 0 and result.loaded >= len(fixed)
    assert fixed <= customer_ids()  # loaded into the ERP
    assert len(customer_ids()) == len(loaded_before) + result.loaded
    still = open_rows(synced)
    assert len(still) == result.still_failing > 0
    assert all(not only_email(r) for r in still)  # what still fails fails for another reason, re-evaluated today
    with Session(get_engine()) as session:
        replayed = session.scalars(select(QuarantinedRecord).where(QuarantinedRecord.status == "replayed")).all()
    assert {r.record_key for r in replayed} >= fixed
    assert all(r.resolved_by == "priya" and "DM-42" in (r.resolution_note or "") for r in replayed)
    assert get_error(synced).status == "pending"  # rows are still open: the error stays open
    event = [e for e in error_events(synced) if e.action == "quarantine_replayed"][-1]
    assert event.actor == "priya" and event.details == {"loaded": result.loaded, "still_failing": result.still_failing}

    # Replaying the replayed rows again finds nothing to do: nothing is loaded twice.
    with pytest.raises(NothingSelected):
        replay(ids=[r.id for r in replayed], by="priya")

    # The rest are test partners nobody will fix: discarded with a reason, kept, and the error closes.
    with pytest.raises(ValueError, match="reason"):
        discard(error_id=synced, by="priya", reason="  ")
    outcome = discard(error_id=synced, by="priya", reason="test partners created by the SAP team, never customers")
    assert len(outcome.discarded_ids) == len(still) and outcome.errors_resolved == [synced]
    with Session(get_engine()) as session:
        counts = dict(session.execute(select(QuarantinedRecord.status, func.count()).group_by(QuarantinedRecord.status)).all())
    assert counts == {"replayed": len(replayed), "discarded": len(still)}  # kept, not deleted
    error = get_error(synced)
    assert (error.status, error.resolved_by) == ("resolved", "priya")
    trail = [(e.action, e.actor) for e in error_events(synced)]
    assert trail[-2:] == [("quarantine_discarded", "priya"), ("resolved", "priya")]


def test_a_replay_of_rows_a_discard_is_closing_meanwhile_loads_none_of_them(
    synced: int, email_rule_relaxed: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The replay waits for the discard's transaction (SQLite) or skips the rows it holds (PostgreSQL): a row
    discarded by one person is never loaded into the ERP by another's replay that read it as still open."""
    import threading
    import time

    import hub.ledger.quarantine as quarantine

    loaded_before = customer_ids()
    outcome: list[object] = []

    def replay_meanwhile() -> None:
        try:
            outcome.append(replay(error_id=synced, by="ravi", reason="the e-mail rule was relaxed"))
        except NothingSelected as exc:
            outcome.append(exc)

    other = threading.Thread(target=replay_meanwhile)
    real_event = quarantine.add_event

    def event_while_the_replay_starts(*args: object, **kwargs: object) -> object:
        if threading.current_thread() is not other and not other.is_alive() and not outcome:
            other.start()
            time.sleep(1.0)  # inside the discard's transaction: the replay reads the rows as still open meanwhile
        return real_event(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(quarantine, "add_event", event_while_the_replay_starts)
    discarded = discard(error_id=synced, by="priya", reason="test partners created by the SAP team, never customers")
    other.join(60)
    assert discarded.discarded_ids and len(outcome) == 1 and isinstance(outcome[0], NothingSelected)
    assert customer_ids() == loaded_before
    with Session(get_engine()) as session:
        statuses = set(session.scalars(select(QuarantinedRecord.status).where(QuarantinedRecord.error_id == synced)))
    assert statuses == {"discarded"}


def test_replay_that_fixes_every_row_resolves_the_error(synced: int, monkeypatch: pytest.MonkeyPatch) -> None:
    from expectations import runner

    rows = open_rows(synced)
    email = [r for r in rows if only_email(r)]
    others = [r for r in rows if not only_email(r)]
    discard(ids=[r.id for r in others], by="priya", reason="not customers")
    assert get_error(synced).status == "pending"
    import expectations.customers as suite

    monkeypatch.setattr(suite, "EMAIL_PATTERN", r"\S")
    runner.reset()
    try:
        result = replay(ids=[r.id for r in email], by="priya", reason="email rule relaxed")
    finally:
        monkeypatch.undo()
        runner.reset()
    assert result.still_failing == 0 and result.errors_resolved == [synced]
    error = get_error(synced)
    assert error.status == "resolved" and "replayed or discarded" in (error.resolution_note or "")


def test_replay_never_overwrites_a_newer_erp_row(synced: int, email_rule_relaxed: None) -> None:
    row = next(r for r in open_rows(synced) if only_email(r))
    newer = datetime.now(UTC) + timedelta(days=1)
    with get_engine().begin() as conn:
        conn.execute(
            Customer.__table__.insert().values(  # type: ignore[attr-defined]
                customer_id=row.record_key, category="organization", name="Fixed at the source", country="IN",
                is_blocked=False, is_archived=False, deletion_flag=False, sap_changed_at=newer, row_hash="x" * 32, synced_at=newer,
            )
        )
    result = replay(ids=[row.id], by="priya")
    assert (result.loaded, result.superseded) == (0, 1)
    with get_engine().connect() as conn:
        name = conn.execute(select(Customer.name).where(Customer.customer_id == row.record_key)).scalar_one()
    assert name == "Fixed at the source"
    with Session(get_engine()) as session:
        replayed = session.get(QuarantinedRecord, row.id)
    assert replayed is not None and replayed.status == "replayed" and "newer version" in (replayed.resolution_note or "")


def test_a_later_run_refusing_the_same_rows_updates_the_open_error_instead_of_adding_one(synced: int) -> None:
    from flows.sync_sap_customers import sync_sap_customers

    before = get_error(synced).response_data
    sandbox = SapSandbox(partners=400, seed=3, max_page_size=200)
    with use_transport("sap", as_transport(sandbox)):
        second = sync_sap_customers(full_refresh=True)
    with Session(get_engine()) as session:
        [error] = session.scalars(select(IntegrationErrorRow).where(IntegrationErrorRow.error_type == "DATA_VALIDATION_FAILED")).all()
    assert error.id == synced and error.status == "pending" and error.flow_run_id == second["flow_run_id"]
    assert error.response_data is not None and before is not None
    assert error.response_data["runs"] == 2 and error.response_data["rows_quarantined"] == before["rows_quarantined"]
    assert [e.action for e in error_events(synced)][-1] == "recurred"
    assert {r.error_id for r in list_quarantine(integration="sap", dataset="customers", limit=10_000)} == {synced}
