"""The `customer_outbox`: how the ERP queues a customer creation or change for SAP, and each push's fate.

The ERP calls `enqueue_customer_change(conn, ...)` inside the transaction that changes its customer, so a change
is queued exactly when it commits (a transactional outbox). Not a trigger on `customers`: the hub's SAP sync
writes that table from SAP, and a trigger would push SAP's own changes back to SAP. The push job
(flows/push_sap_customers.py) claims pages of due rows; every state change after that is its own short
transaction, so one customer's failure never touches another's. docs/sap-customer-push.md tells the whole story.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

from pydantic import BaseModel, Field
from sqlalchemy import Connection, Table, and_, or_, select, update

from connectors.sap.partners_write import BY_NAME, ERP_OWNED, SALES_AREA_FIELDS
from hub.core.db import get_engine, session_scope
from hub.core.models import Customer, CustomerOutbox, CustomerPushStatus, IntegrationErrorRow

INTEGRATION = "sap"
DATASET = "customer_push"
OPERATIONS = ("create", "update")
# The fields the ERP may send: every field of the ownership table (connectors/sap/partners_write.py FIELDS).
ERP_FIELDS: tuple[str, ...] = tuple(BY_NAME)
# A placeholder change time for a customers row the push writes before the SAP sync has read the partner: the
# oldest there is, so the sync's first read of the partner always replaces it (customers keeps newer_wins).
NOT_YET_SYNCED = datetime(1970, 1, 1, tzinfo=UTC)


class CustomerPushOptions(BaseModel):
    """`[sap.customer_push]` in config/integrations.toml."""

    push_schedule_cron: str = "* * * * *"
    rows_per_task: int = Field(50, ge=1, le=500)
    max_attempts: int = Field(8, ge=1, description="transient failures retried by later runs (backoff) this many times, then failed")
    batch_size: int = Field(20, ge=1, le=100, description="customers per $batch request, one change set each")


def push_options() -> CustomerPushOptions:
    import tomllib

    from hub.core.settings import get_settings

    with get_settings().integrations_file.open("rb") as fh:
        section = tomllib.load(fh).get("sap", {})
    return CustomerPushOptions(**section.get("customer_push", {}))


def _outbox() -> Table:
    table = CustomerOutbox.__table__
    assert isinstance(table, Table)
    return table


def _customers() -> Table:
    table = Customer.__table__
    assert isinstance(table, Table)
    return table


def check_fields(fields: Mapping[str, Any]) -> dict[str, Any]:
    """The ERP's fields as stored: known names only, sales areas as lists of known keys."""
    unknown = sorted(set(fields) - set(ERP_FIELDS))
    if unknown:
        raise ValueError(f"unknown customer field(s) {', '.join(unknown)}; known: {', '.join(ERP_FIELDS)}")
    out = dict(fields)
    if out.get("category") not in (None, "person", "organization"):
        raise ValueError("category is person or organization")
    for area in out.get("sales_areas") or ():
        if not isinstance(area, Mapping) or set(area) - set(SALES_AREA_FIELDS):
            raise ValueError(f"a sales area takes {', '.join(SALES_AREA_FIELDS)}")
    return out


def enqueue_customer_change(
    conn: Connection,
    erp_ref: str,
    fields: Mapping[str, Any],
    *,
    operation: str | None = None,
    partner: str | None = None,
) -> int:
    """Queue an ERP customer creation or change for SAP, in the caller's transaction (`conn`); returns the row id.

    `erp_ref` is the ERP's own key (`ERP-000123`), kept in SAP as BusinessPartnerIDByExtSystem. The operation
    defaults to `update` when the partner is known (given, or a `customers` row carries this ERP reference),
    else `create`. An update records the ERP-owned fields of the `customers` row as the ERP saw them
    (`base_fields`): the push tells SAP's edits since from the ERP's with it.
    """
    if not erp_ref or len(erp_ref) > 20:
        raise ValueError("erp_ref is the ERP's customer key, 1 to 20 characters (SAP BusinessPartnerIDByExtSystem)")
    values = check_fields(fields)
    customers = _customers()
    row = None
    if partner is not None:
        row = conn.execute(select(customers).where(customers.c.customer_id == partner)).mappings().first()
    else:
        row = conn.execute(select(customers).where(customers.c.erp_ref == erp_ref).limit(1)).mappings().first()
        partner = str(row["customer_id"]) if row is not None else None
    operation = operation or ("update" if partner else "create")
    if operation not in OPERATIONS:
        raise ValueError(f"operation is one of {', '.join(OPERATIONS)}")
    if operation == "create" and not values.get("name") and not (values.get("first_name") or values.get("last_name")):
        raise ValueError("a create needs a name (organisation) or a first and last name (person)")
    base = {name: row[name] for name in ERP_OWNED if name in row} if row is not None and operation == "update" else None
    now = datetime.now(UTC)
    result = conn.execute(
        _outbox().insert().values(
            erp_ref=erp_ref, operation=operation, partner=partner, fields=values, base_fields=base,
            status=CustomerPushStatus.PENDING.value, attempts=0, created_at=now, updated_at=now,
        ).returning(_outbox().c.id)
    )
    return int(result.scalar_one())


def claim_page(after_id: int, limit: int, *, through_id: int | None = None, now: datetime | None = None) -> list[dict[str, Any]]:
    """The next `limit` due rows after `after_id` (up to `through_id`): pending, and their retry time come."""
    now = now or datetime.now(UTC)
    table = _outbox()
    due = and_(
        table.c.status == CustomerPushStatus.PENDING.value,
        or_(table.c.next_attempt_at.is_(None), table.c.next_attempt_at <= now),
    )
    query = select(table).where(table.c.id > after_id, due)
    if through_id is not None:
        query = query.where(table.c.id <= through_id)
    with get_engine().connect() as conn:
        return [dict(r) for r in conn.execute(query.order_by(table.c.id).limit(limit)).mappings()]


def read_row(outbox_id: int) -> list[dict[str, Any]]:
    """One outbox row for a rerun of its push, due or not; [] when it was pushed since."""
    table = _outbox()
    with get_engine().connect() as conn:
        row = conn.execute(select(table).where(table.c.id == outbox_id)).mappings().first()
    if row is None or row["status"] == CustomerPushStatus.PUSHED.value:
        return []
    return [dict(row)]


def _set(outbox_id: int, **values: Any) -> None:
    with get_engine().begin() as conn:
        conn.execute(update(_outbox()).where(_outbox().c.id == outbox_id).values(updated_at=datetime.now(UTC), **values))


def record_pushed(row: Mapping[str, Any], *, partner: str, etag: str | None, created: bool, record: Mapping[str, Any] | None = None) -> None:
    """The push reached SAP: the row is `pushed` with its partner and ETag, and the partner key is written back.

    After a create (or an adoption) the ERP's `customers` gets the partner, keyed by its number, with the ERP
    reference; the SAP sync fills the rest when it next reads the partner. Later rows of the same ERP
    reference that did not know the partner learn it.
    """
    now = datetime.now(UTC)
    table, customers = _outbox(), _customers()
    with get_engine().begin() as conn:
        conn.execute(update(table).where(table.c.id == row["id"]).values(
            status=CustomerPushStatus.PUSHED.value, partner=partner, sap_etag=etag, pushed_at=now, updated_at=now,
            next_attempt_at=None, last_error=None,
        ))
        conn.execute(update(table).where(table.c.erp_ref == row["erp_ref"], table.c.partner.is_(None), table.c.id != row["id"])
                     .values(partner=partner, updated_at=now))
        existing = conn.execute(select(customers.c.customer_id, customers.c.erp_ref).where(customers.c.customer_id == partner)).first()
        if existing is not None:
            if existing.erp_ref != row["erp_ref"]:
                conn.execute(update(customers).where(customers.c.customer_id == partner).values(erp_ref=row["erp_ref"]))
            return
        if not created:
            return
        conn.execute(customers.insert().values(**_new_customer_row(partner, row["erp_ref"], row["fields"], record or {}, now)))


def _new_customer_row(partner: str, erp_ref: str, fields: Mapping[str, Any], record: Mapping[str, Any], now: datetime) -> dict[str, Any]:
    """The ERP's `customers` row of a partner it just created, from what it sent (SAP's sync replaces it)."""
    person = fields.get("category") == "person"
    full = " ".join(str(p) for p in (fields.get("first_name"), fields.get("last_name")) if p)
    text = {name: (str(fields[name])[: _customers().c[name].type.length] if fields.get(name) else None)  # type: ignore[attr-defined]
            for name in ("first_name", "last_name", "search_term", "language", "email", "phone", "mobile", "street",
                         "house_number", "city", "postal_code", "region", "gstin", "account_group", "bp_grouping")}
    return {
        "customer_id": partner,
        "sap_customer": str(record.get("Customer") or "")[:10] or None,
        "category": "person" if person else "organization",
        "name": str((full if person else fields.get("name")) or fields.get("name") or full)[:81],
        **text,
        "country": str(fields.get("country") or "")[:3],
        "is_blocked": False,
        "is_archived": False,
        "deletion_flag": False,
        "sap_changed_at": NOT_YET_SYNCED,
        "row_hash": "",
        "source_run_id": None,
        "synced_at": now,
        "erp_ref": erp_ref,
    }


def record_retry_later(outbox_id: int, *, attempts: int, message: str, retry_in: timedelta) -> None:
    """A transient failure: the row stays `pending` and waits for its next attempt."""
    _set(outbox_id, attempts=attempts, last_error=message[:4000], next_attempt_at=datetime.now(UTC) + retry_in)


def record_failed(outbox_id: int, *, attempts: int, message: str, error_id: int | None) -> None:
    """SAP refused it, or its attempts ran out: `failed`, with the error row that says why."""
    values: dict[str, Any] = {"status": CustomerPushStatus.FAILED.value, "attempts": attempts, "last_error": message[:4000], "next_attempt_at": None}
    if error_id is not None:
        values["last_error_id"] = error_id
    _set(outbox_id, **values)


def record_conflict(outbox_id: int, *, attempts: int, message: str, error_id: int | None, etag: str | None) -> None:
    """SAP changed the partner too and the rule could not settle it: `conflict`, for a person to decide."""
    values: dict[str, Any] = {"status": CustomerPushStatus.CONFLICT.value, "attempts": attempts, "last_error": message[:4000],
                              "next_attempt_at": None, "sap_etag": etag}
    if error_id is not None:
        values["last_error_id"] = error_id
    _set(outbox_id, **values)


def start_attempt(outbox_id: int, attempts: int) -> None:
    _set(outbox_id, attempts=attempts)


def requeue(outbox_id: int, fields: Mapping[str, Any] | None = None) -> None:
    """Put a conflict or failed row back in the queue (with the values a person chose, when given)."""
    values: dict[str, Any] = {"status": CustomerPushStatus.PENDING.value, "next_attempt_at": None, "attempts": 0}
    if fields is not None:
        values["fields"] = check_fields(fields)
    _set(outbox_id, **values)


def resolve_customer_errors(outbox_id: int, note: str, *, keep: int | None = None) -> int:
    """Resolve the open integration_errors of one outbox row (its unit names it) once it is pushed; `keep` is the
    row a rerun is resolving itself (with its audit trail)."""
    from hub.ledger.errors import OPEN_STATUSES, resolve_error

    with session_scope() as session:
        rows = session.scalars(
            select(IntegrationErrorRow).where(
                IntegrationErrorRow.integration == INTEGRATION,
                IntegrationErrorRow.dataset == DATASET,
                IntegrationErrorRow.status.in_(OPEN_STATUSES),
            )
        ).all()
        ids = [int(r.id) for r in rows if (r.unit or {}).get("outbox_id") == outbox_id and int(r.id) != keep]
    for error_id in ids:
        resolve_error(error_id, by="flow:push-sap-customers", reason=note)
    return len(ids)


def outbox_rows(*, status: str | None = None, erp_ref: str | None = None, limit: int = 50) -> list[dict[str, Any]]:
    """Outbox rows, newest first (the CLI's list)."""
    table = _outbox()
    query = select(table)
    if status:
        query = query.where(table.c.status == status)
    if erp_ref:
        query = query.where(table.c.erp_ref == erp_ref)
    with get_engine().connect() as conn:
        return [dict(r) for r in conn.execute(query.order_by(table.c.id.desc()).limit(limit)).mappings()]


__all__ = [
    "DATASET",
    "ERP_FIELDS",
    "INTEGRATION",
    "CustomerPushOptions",
    "claim_page",
    "enqueue_customer_change",
    "outbox_rows",
    "push_options",
    "read_row",
    "record_conflict",
    "record_failed",
    "record_pushed",
    "record_retry_later",
    "requeue",
    "resolve_customer_errors",
]
