"""The `document_outbox`: enqueue ERP documents, claim pages of them, and record each upload's fate.

Every state change is its own short transaction, so one file's failure (or a crash mid-upload) never
touches another file, and an open upload session's URL and confirmed bytes are on disk after every
fragment: the next run resumes it where it stopped.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import and_, or_, select, update

from connectors.core.errors import IntegrationError
from hub.core.db import session_scope
from hub.core.models import DocumentOutbox, DocumentStatus

CONFLICT_POLICIES = ("replace", "rename", "fail")


def enqueue_document(
    document_key: str,
    folder_path: str,
    file_name: str,
    *,
    source_path: str | Path | None = None,
    content: bytes | None = None,
    drive_id: str | None = None,
    content_type: str | None = None,
    metadata: Mapping[str, Any] | None = None,
    conflict_policy: str = "rename",
) -> int:
    """Add a document to the outbox (idempotent on `document_key`: a second call returns the existing row)."""
    if (source_path is None) == (content is None):
        raise ValueError("give exactly one of source_path or content")
    with session_scope() as session:
        existing = session.scalar(select(DocumentOutbox).where(DocumentOutbox.document_key == document_key))
        if existing is not None:
            return int(existing.id)
        row = DocumentOutbox(
            document_key=document_key,
            source_path=str(source_path) if source_path is not None else None,
            content=content,
            drive_id=drive_id,
            folder_path=folder_path,
            file_name=file_name,
            content_type=content_type,
            document_metadata=dict(metadata) if metadata else None,
            conflict_policy=conflict_policy,
            status=DocumentStatus.PENDING.value,
            attempts=0,
            bytes_confirmed=0,
        )
        session.add(row)
        session.flush()
        return int(row.id)


def claim_page(
    after_id: int, limit: int, max_attempts: int, now: datetime | None = None, *, through_id: int | None = None
) -> list[dict[str, Any]]:
    """The next `limit` rows after `after_id` (up to `through_id`) that are due: pending, mid-upload, or failed
    and due for a retry.

    Source files are stat'ed here (the extract step), so the mapping stays pure.
    """
    now = now or datetime.now(UTC)
    due = or_(
        DocumentOutbox.status.in_([DocumentStatus.PENDING.value, DocumentStatus.UPLOADING.value]),
        and_(
            DocumentOutbox.status == DocumentStatus.FAILED.value,
            DocumentOutbox.attempts < max_attempts,
            DocumentOutbox.next_attempt_at.is_not(None),
            DocumentOutbox.next_attempt_at <= now,
        ),
    )
    query = select(DocumentOutbox).where(DocumentOutbox.id > after_id, due)
    if through_id is not None:
        query = query.where(DocumentOutbox.id <= through_id)
    with session_scope() as session:
        return [_extracted(row) for row in session.scalars(query.order_by(DocumentOutbox.id).limit(limit)).all()]


def read_document(document_id: int) -> list[dict[str, Any]]:
    """One outbox row for a rerun of its failed upload, due or not; [] when it is uploaded or quarantined since."""
    with session_scope() as session:
        row = session.get(DocumentOutbox, document_id)
        if row is None or row.status in (DocumentStatus.UPLOADED.value, DocumentStatus.QUARANTINED.value):
            return []
        return [_extracted(row)]


def _extracted(row: DocumentOutbox) -> dict[str, Any]:
    """The outbox row as the pipeline reads it, its source file stat'ed (existence and size)."""
    record: dict[str, Any] = {c.key: getattr(row, c.key) for c in DocumentOutbox.__table__.columns}
    if row.source_path:
        try:
            stat = os.stat(row.source_path)
            record["source_exists"], record["source_size"] = Path(row.source_path).is_file(), stat.st_size
        except OSError:
            record["source_exists"], record["source_size"] = False, None
    return record


def record_progress(document_id: int, upload_url: str, confirmed: int, expires_at: datetime | None) -> None:
    """The open session and the bytes the server confirmed: what the next run resumes from."""
    with session_scope() as session:
        session.execute(
            update(DocumentOutbox)
            .where(DocumentOutbox.id == document_id)
            .values(status=DocumentStatus.UPLOADING.value, upload_url=upload_url, bytes_confirmed=confirmed,
                    upload_expires_at=expires_at, updated_at=datetime.now(UTC))
        )


def start_attempt(document_id: int, size: int | None) -> None:
    with session_scope() as session:
        session.execute(
            update(DocumentOutbox)
            .where(DocumentOutbox.id == document_id)
            .values(attempts=DocumentOutbox.attempts + 1, size_bytes=size, updated_at=datetime.now(UTC))
        )


def record_uploaded(document_id: int, *, item_id: str, web_url: str, name: str, size: int) -> None:
    now = datetime.now(UTC)
    with session_scope() as session:
        session.execute(
            update(DocumentOutbox)
            .where(DocumentOutbox.id == document_id)
            .values(status=DocumentStatus.UPLOADED.value, drive_item_id=item_id, web_url=web_url, uploaded_name=name,
                    size_bytes=size, bytes_confirmed=size, upload_url=None, upload_expires_at=None, error_code=None,
                    last_error=None, next_attempt_at=None, uploaded_at=now, updated_at=now)
        )


def resolve_document_errors(document_id: int, note: str, *, keep: int | None = None) -> int:
    """Resolve the open integration_errors of one document (its unit names it) once it is uploaded; `keep` is
    the row a rerun is resolving itself (with its audit trail)."""
    from hub.core.models import ErrorStatus, IntegrationErrorRow

    now = datetime.now(UTC)
    with session_scope() as session:
        rows = session.scalars(
            select(IntegrationErrorRow).where(
                IntegrationErrorRow.integration == "microsoft365",
                IntegrationErrorRow.dataset == "documents",
                IntegrationErrorRow.status.in_([ErrorStatus.PENDING.value, ErrorStatus.RETRYING.value]),
            )
        ).all()
        count = 0
        for row in rows:
            if isinstance(row.unit, dict) and row.unit.get("document_id") == document_id and row.id != keep:
                row.status, row.resolved_at, row.resolution_note, row.updated_at = ErrorStatus.RESOLVED.value, now, note, now
                count += 1
        return count


def record_failure(document_id: int, error: IntegrationError, *, retry_in: timedelta | None, forget_session: bool) -> None:
    """Failed attempt: a transient error is retried by a later run after `retry_in`; others wait for a person."""
    now = datetime.now(UTC)
    values: dict[str, Any] = {
        "status": DocumentStatus.FAILED.value,
        "error_code": (error.code or error.category.value)[:128],
        "last_error": str(error)[:4000],
        "next_attempt_at": now + retry_in if retry_in is not None else None,
        "updated_at": now,
    }
    if forget_session:
        values.update(upload_url=None, bytes_confirmed=0, upload_expires_at=None)
    with session_scope() as session:
        session.execute(update(DocumentOutbox).where(DocumentOutbox.id == document_id).values(**values))


def record_quarantined(document_ids: Mapping[int, str]) -> None:
    """Rows refused by the documents suite: `{id: failed rule ids}`."""
    now = datetime.now(UTC)
    with session_scope() as session:
        for document_id, reasons in document_ids.items():
            session.execute(
                update(DocumentOutbox)
                .where(DocumentOutbox.id == document_id)
                .values(status=DocumentStatus.QUARANTINED.value, error_code="DATA_VALIDATION_FAILED",
                        last_error=reasons[:4000], next_attempt_at=None, updated_at=now)
            )


def requeue(document_key: str, *, file_name: str | None = None, folder_path: str | None = None,
            conflict_policy: str | None = None) -> bool:
    """Put a failed or quarantined document back in the queue (optionally fixed); False if unknown or uploaded."""
    if conflict_policy is not None and conflict_policy not in CONFLICT_POLICIES:
        raise ValueError(f"conflict policy must be one of {', '.join(CONFLICT_POLICIES)}")
    with session_scope() as session:
        row = session.scalar(select(DocumentOutbox).where(DocumentOutbox.document_key == document_key))
        if row is None or row.status == DocumentStatus.UPLOADED.value:
            return False
        if file_name is not None:
            row.file_name = file_name
        if folder_path is not None:
            row.folder_path = folder_path
        if conflict_policy is not None:
            row.conflict_policy = conflict_policy
        row.status = DocumentStatus.PENDING.value
        row.attempts = 0
        row.next_attempt_at = None
        row.error_code = None
        row.last_error = None
        row.updated_at = datetime.now(UTC)
        return True


def list_documents(status: str | None = None, limit: int = 50) -> list[DocumentOutbox]:
    with session_scope() as session:
        query = select(DocumentOutbox).order_by(DocumentOutbox.id.desc()).limit(limit)
        if status:
            query = query.where(DocumentOutbox.status == status)
        return list(session.scalars(query))
