"""The durable webhook inbox: writes of the ingress, and the small API the processing flows drain it with.

The ingress writes verified items (`write_batch`) and rejection counts; processing claims received
events in its own transaction (`claim_received`, `FOR UPDATE SKIP LOCKED` on PostgreSQL so that two
workers never take the same event) and marks each one processed or failed in that same transaction.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, cast

import orjson
from sqlalchemy import Connection, Table, func, or_, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert

from connectors.core.redact import redact_text
from hub.core.db import for_update, get_engine
from hub.core.models import WebhookEvent, WebhookRejection, WebhookStatus, WebhookToken
from hub.ingress.security import Reason

if TYPE_CHECKING:
    import psycopg

MAX_ERROR = 4000


@dataclass(frozen=True)
class PendingEvent:
    """A verified item waiting for its group commit."""

    provider: str
    event_id: str
    event_type: str
    body: bytes
    headers: Mapping[str, str]
    remote_addr: str | None
    received_at: datetime
    body_sha256: str | None = None
    provider_event_id: str | None = None  # unsigned (x-razorpay-event-id): kept as information only
    event_at: datetime | None = None  # the payload's own time


@dataclass(frozen=True)
class PendingRejection:
    """A refused delivery waiting to be counted."""

    provider: str
    reason: str
    remote_addr: str | None
    at: datetime


@dataclass(frozen=True)
class InboxEvent:
    """A stored event as processing sees it."""

    id: int
    provider: str
    event_id: str
    event_type: str
    body: bytes
    headers: dict[str, Any]
    remote_addr: str | None
    received_at: datetime
    status: str
    attempts: int
    body_sha256: str | None = None
    provider_event_id: str | None = None
    event_at: datetime | None = None


def _insert(conn: Connection, table: Table) -> Any:
    return (pg_insert if conn.dialect.name == "postgresql" else sqlite_insert)(table)


_PG_INSERT_EVENTS = (
    f"INSERT INTO {WebhookEvent.__tablename__} "
    "(provider, event_id, event_type, body, headers, remote_addr, received_at, body_sha256, provider_event_id, event_at, "
    "status, attempts) "
    "SELECT provider, event_id, event_type, body, headers::jsonb, remote_addr, received_at, body_sha256, provider_event_id, "
    "event_at, %s, 0 "
    "FROM unnest(%b::varchar[], %b::varchar[], %b::varchar[], %b::bytea[], %b::text[], %b::varchar[], "
    "%b::timestamptz[], %b::varchar[], %b::varchar[], %b::timestamptz[]) "
    "AS e(provider, event_id, event_type, body, headers, remote_addr, received_at, body_sha256, provider_event_id, event_at) "
    "ON CONFLICT (provider, event_id) DO NOTHING"
)


def _aware(value: datetime | None) -> datetime | None:
    if value is None:
        return None
    if value.tzinfo is None:
        raise ValueError("naive datetime refused: timestamps are timezone-aware UTC inside the hub")
    return value.astimezone(UTC)


def _event_columns(events: Sequence[PendingEvent]) -> tuple[list[Any], ...]:
    """The ten arrays `_PG_INSERT_EVENTS` unnests, one element per event."""
    columns: tuple[list[Any], ...] = ([], [], [], [], [], [], [], [], [], [])
    provider, event_id, event_type, body, headers, remote_addr, received_at, body_sha256, provider_event_id, event_at = columns
    for e in events:
        provider.append(e.provider)
        event_id.append(e.event_id)
        event_type.append(e.event_type)
        body.append(e.body)
        headers.append(orjson.dumps(dict(e.headers)).decode())
        remote_addr.append(e.remote_addr)
        received_at.append(_aware(e.received_at))
        body_sha256.append(e.body_sha256)
        provider_event_id.append(e.provider_event_id)
        event_at.append(_aware(e.event_at))
    return columns


def _insert_events_psycopg(conn: Connection, events: Sequence[PendingEvent]) -> None:
    """The ingress's hot insert on PostgreSQL: the whole group commit as ONE statement over arrays
    (`unnest`), so the server parses, plans and executes once per batch rather than once per event; on
    a host whose cores the database shares with the ingress, that server CPU is ingress throughput. The
    arrays go in binary (`%b`): psycopg's text format escapes every element with a regex. Same rows,
    same ON CONFLICT rule, inside the caller's transaction."""
    with conn.connection.driver_connection.cursor() as cursor:  # type: ignore[union-attr]
        cursor.execute(_PG_INSERT_EVENTS, (WebhookStatus.RECEIVED.value, *_event_columns(events)))


def _unique_events(events: Sequence[PendingEvent]) -> list[PendingEvent]:
    unique: dict[tuple[str, str], PendingEvent] = {}
    for event in events:
        unique.setdefault((event.provider, event.event_id), event)
    return list(unique.values())


def _rejection_counts(rejections: Sequence[PendingRejection]) -> list[dict[str, Any]]:
    """Refusals summed per provider, reason and minute (the rows of `webhook_rejections`)."""
    counts: dict[tuple[str, str, datetime], list[Any]] = {}
    for r in rejections:
        window = r.at.astimezone(UTC).replace(second=0, microsecond=0)
        entry = counts.setdefault((r.provider, r.reason, window), [0, None, r.at])
        entry[0] += 1
        entry[1] = r.remote_addr
        entry[2] = max(entry[2], r.at)
    return [
        {"provider": p, "reason": reason, "window_start": w, "count": c, "last_remote_addr": addr, "last_seen_at": seen}
        for (p, reason, w), (c, addr, seen) in counts.items()
    ]


_PG_UPSERT_REJECTIONS = (
    f"INSERT INTO {WebhookRejection.__tablename__} "
    "(provider, reason, window_start, count, last_remote_addr, last_seen_at) "
    "VALUES (%(provider)s, %(reason)s, %(window_start)s, %(count)s, %(last_remote_addr)s, %(last_seen_at)s) "
    "ON CONFLICT (provider, reason, window_start) DO UPDATE SET "
    f"count = {WebhookRejection.__tablename__}.count + EXCLUDED.count, "
    "last_remote_addr = EXCLUDED.last_remote_addr, last_seen_at = EXCLUDED.last_seen_at"
)


async def write_batch_async(conn: psycopg.AsyncConnection[Any], events: Sequence[PendingEvent], rejections: Sequence[PendingRejection]) -> None:
    """`write_batch` for the ingress's own PostgreSQL connection on the event loop, in ONE transaction:
    the same statements and rules, without a thread (see `hub.ingress.writer.PostgresInboxWriter`)."""
    async with conn.transaction(), conn.cursor() as cursor:
        if events:
            await cursor.execute(_PG_INSERT_EVENTS, (WebhookStatus.RECEIVED.value, *_event_columns(_unique_events(events))))
        if rejections:
            await cursor.executemany(_PG_UPSERT_REJECTIONS, _rejection_counts(rejections))


def write_batch(conn: Connection, events: Sequence[PendingEvent], rejections: Sequence[PendingRejection]) -> None:
    """Store events (a known provider event id is skipped, not an error) and add rejection counts."""
    if events:
        table = cast(Table, WebhookEvent.__table__)
        unique = _unique_events(events)
        if conn.dialect.name == "postgresql" and conn.dialect.driver == "psycopg":
            _insert_events_psycopg(conn, unique)
        else:
            rows = [
                {
                    "provider": e.provider,
                    "event_id": e.event_id,
                    "event_type": e.event_type,
                    "body": e.body,
                    "headers": dict(e.headers),
                    "remote_addr": e.remote_addr,
                    "received_at": e.received_at,
                    "body_sha256": e.body_sha256,
                    "provider_event_id": e.provider_event_id,
                    "event_at": e.event_at,
                    "status": WebhookStatus.RECEIVED.value,
                    "attempts": 0,
                }
                for e in unique
            ]
            conn.execute(_insert(conn, table).on_conflict_do_nothing(index_elements=["provider", "event_id"]), rows)
    if rejections:
        table = cast(Table, WebhookRejection.__table__)
        values = _rejection_counts(rejections)
        stmt = _insert(conn, table)
        stmt = stmt.on_conflict_do_update(
            index_elements=["provider", "reason", "window_start"],
            set_={
                "count": table.c.count + stmt.excluded.count,
                "last_remote_addr": stmt.excluded.last_remote_addr,
                "last_seen_at": stmt.excluded.last_seen_at,
            },
        )
        conn.execute(stmt, values)


def _to_event(row: Any) -> InboxEvent:
    return InboxEvent(
        id=int(row.id),
        provider=row.provider,
        event_id=row.event_id,
        event_type=row.event_type,
        body=bytes(row.body),
        headers=dict(row.headers or {}),
        remote_addr=row.remote_addr,
        received_at=row.received_at,
        status=row.status,
        attempts=int(row.attempts),
        body_sha256=row.body_sha256,
        provider_event_id=row.provider_event_id,
        event_at=row.event_at,
    )


def list_events(*, status: str | None = WebhookStatus.RECEIVED.value, provider: str | None = None, limit: int = 100) -> list[InboxEvent]:
    """Events oldest first (by default those still waiting for processing); read-only."""
    query = select(WebhookEvent.__table__).order_by(WebhookEvent.id).limit(limit)
    if status:
        query = query.where(WebhookEvent.status == status)
    if provider:
        query = query.where(WebhookEvent.provider == provider)
    with get_engine().connect() as conn:
        return [_to_event(row) for row in conn.execute(query)]


def claim_received(
    conn: Connection, *, provider: str | None = None, limit: int = 100, providers: Sequence[str] | None = None
) -> list[InboxEvent]:
    """Lock up to `limit` received events (of `provider`, or of any of `providers`) for the caller's
    transaction, oldest first, and count the attempt."""
    query = (
        select(WebhookEvent.__table__)
        .where(WebhookEvent.status == WebhookStatus.RECEIVED.value)
        .order_by(WebhookEvent.id)
        .limit(limit)
    )
    if provider:
        query = query.where(WebhookEvent.provider == provider)
    if providers is not None:
        query = query.where(WebhookEvent.provider.in_(list(providers)))
    # Concurrent drainers never process an event twice: on PostgreSQL they skip each other's rows; on SQLite the
    # second waits for the first's commit and finds its events processed.
    events = [_to_event(row) for row in conn.execute(for_update(conn, query, skip_locked=True))]
    if events:
        conn.execute(
            update(WebhookEvent)
            .where(WebhookEvent.id.in_([e.id for e in events]))
            .values(attempts=WebhookEvent.attempts + 1)
        )
    return [replace(e, attempts=e.attempts + 1) for e in events]


def claim_event(conn: Connection, inbox_id: int) -> InboxEvent | None:
    """Lock one stored event by its inbox id, whatever its status, and count the attempt (a rerun of one event)."""
    row = conn.execute(for_update(conn, select(WebhookEvent.__table__).where(WebhookEvent.id == inbox_id))).first()
    if row is None:
        return None
    conn.execute(update(WebhookEvent).where(WebhookEvent.id == inbox_id).values(attempts=WebhookEvent.attempts + 1))
    return replace(_to_event(row), attempts=int(row.attempts) + 1)


def mark_processed(conn: Connection, event_ids: Sequence[int]) -> int:
    """Mark events processed (in the transaction that applied them); returns how many moved."""
    if not event_ids:
        return 0
    result = conn.execute(
        update(WebhookEvent)
        .where(WebhookEvent.id.in_(list(event_ids)))
        .values(status=WebhookStatus.PROCESSED.value, processed_at=datetime.now(UTC), last_error=None)
    )
    return int(result.rowcount)


def mark_failed(conn: Connection, event_id: int, error: str) -> None:
    """Mark an event failed with its (redacted) error; it stays in the inbox to be replayed."""
    conn.execute(
        update(WebhookEvent)
        .where(WebhookEvent.id == event_id)
        .values(status=WebhookStatus.FAILED.value, last_error=redact_text(error)[:MAX_ERROR])
    )


def replay_event(event_id: str, *, provider: str | None = None) -> int:
    """Put a stored event back to `received` so the next drain applies it again; returns rows reset.

    `event_id` is the inbox key or the id the provider showed (Razorpay's `evt_...`, kept with the row).
    Safe because applying is idempotent: an effect already in place is found and left as it is.
    """
    query = update(WebhookEvent).where(or_(WebhookEvent.event_id == event_id, WebhookEvent.provider_event_id == event_id))
    if provider:
        query = query.where(WebhookEvent.provider == provider)
    with get_engine().begin() as conn:
        result = conn.execute(query.values(status=WebhookStatus.RECEIVED.value, processed_at=None, last_error=None))
    return int(result.rowcount)


def rejection_counts(*, provider: str | None = None, since: datetime | None = None) -> dict[str, int]:
    """Rejections per reason (for a provider, since a time), summed over the per-minute windows."""
    query = select(WebhookRejection.reason, func.sum(WebhookRejection.count)).group_by(WebhookRejection.reason)
    if provider:
        query = query.where(WebhookRejection.provider == provider)
    if since:
        query = query.where(WebhookRejection.window_start >= since.astimezone(UTC).replace(second=0, microsecond=0))
    with get_engine().connect() as conn:
        return {reason: int(total) for reason, total in conn.execute(query)}


# --- one-time tokens ------------------------------------------------------------------------


def token_hash(token: str) -> str:
    """Tokens are stored only as their SHA-256, so the table cannot be used to forge deliveries."""
    return hashlib.sha256(token.encode()).hexdigest()


def issue_token(provider: str, ttl: timedelta = timedelta(hours=24)) -> str:
    """A new one-time token for a provider's delivery URL; usable once, until it expires."""
    token = secrets.token_urlsafe(32)
    now = datetime.now(UTC)
    with get_engine().begin() as conn:
        conn.execute(
            cast(Table, WebhookToken.__table__).insert().values(
                token_hash=token_hash(token), provider=provider, created_at=now, expires_at=now + ttl, used_at=None
            )
        )
    return token


class DbTokenStore:
    """The durable token store: a token is spent in the transaction that stores its delivery, and a used
    token stays used across restarts."""

    def spend_and_store(
        self, provider: str, token: str, body_sha256: str, events: Sequence[PendingEvent], now: datetime
    ) -> Reason | None:
        """Spend `token` on this delivery and store its events, in ONE transaction; None when stored or
        acknowledged. A failed insert rolls the spend back (the provider's retry still holds a usable token);
        a retry of the delivery already stored under the token is acknowledged with no second effect."""
        digest = token_hash(token)
        with get_engine().begin() as conn:
            spent = conn.execute(
                update(WebhookToken)
                .where(
                    WebhookToken.token_hash == digest,
                    WebhookToken.provider == provider,
                    WebhookToken.used_at.is_(None),
                    WebhookToken.expires_at > now,
                )
                .values(used_at=now, body_sha256=body_sha256)
            ).rowcount
            if spent == 1:
                write_batch(conn, events, [])
                return None
            # Under READ COMMITTED this read sees a concurrent spend that committed while we waited on its row.
            known = conn.execute(
                select(WebhookToken.used_at, WebhookToken.body_sha256).where(
                    WebhookToken.token_hash == digest, WebhookToken.provider == provider
                )
            ).first()
        if known is not None and known.used_at is not None:
            if known.body_sha256 is not None and hmac.compare_digest(known.body_sha256, body_sha256):
                return None  # the same signed delivery again (a retry after a lost 200): already stored
            return Reason.TOKEN_REPLAYED
        return Reason.TOKEN_UNKNOWN_OR_EXPIRED
