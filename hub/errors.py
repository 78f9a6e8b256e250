"""The `integration_errors` ledger: every failure that ended a unit of work becomes one row."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Any, cast

from sqlalchemy import CursorResult, select, update

from connectors.core.errors import DataValidationFailed, IntegrationError
from connectors.core.redact import redact_mapping, redact_text
from hub.db import session_scope
from hub.loading import json_safe
from hub.models import ErrorStatus, IntegrationErrorRow
from hub.settings import get_settings


def record_error(
    error: IntegrationError,
    *,
    integration: str,
    dataset: str | None = None,
    flow_run_id: str | None = None,
    unit: Mapping[str, Any] | None = None,
    retry_count: int = 0,
    max_retries: int = 0,
    next_retry_in: timedelta | None = None,
) -> int:
    """Write one error row in its own transaction (the failed unit's transaction has rolled back)."""
    now = datetime.now(UTC)
    row = IntegrationErrorRow(
        org_id=get_settings().org_id,
        integration=integration,
        dataset=dataset,
        operation=error.operation,
        error_code=error.code,
        error_message=redact_text(str(error.message))[:4000],
        error_type=error.category.value,
        severity=(error.severity.value if error.severity else "high"),
        transient=error.transient,
        http_status=error.status_code,
        request_data=json_safe(redact_mapping(error.request_data)) or None,
        response_data=json_safe(redact_mapping(error.response_data)) or None,
        unit=json_safe(redact_mapping(dict(unit))) if unit else None,
        remedy=error.remedy,
        retry_count=retry_count,
        max_retries=max_retries,
        status=ErrorStatus.PENDING.value,
        flow_run_id=flow_run_id,
        next_retry_at=(now + next_retry_in) if next_retry_in is not None else None,
        created_at=now,
        updated_at=now,
    )
    with session_scope() as session:
        session.add(row)
        session.flush()
        return int(row.id)


def record_validation_failure(
    *,
    integration: str,
    dataset: str,
    flow_run_id: str | None,
    rows_checked: int,
    rows_quarantined: int,
    failures_by_expectation: Mapping[str, int],
    sample: list[dict[str, Any]],
    report_path: str | None,
) -> int:
    """One DATA_VALIDATION_FAILED row per run and dataset, with counts and a sample of refused rows."""
    summary = ", ".join(f"{name}: {count}" for name, count in sorted(failures_by_expectation.items()))
    error = DataValidationFailed(
        f"{rows_quarantined} of {rows_checked} {dataset} rows failed validation and were quarantined ({summary})",
        code="EXPECTATIONS_FAILED",
        response_data={
            "rows_checked": rows_checked,
            "rows_quarantined": rows_quarantined,
            "failures_by_expectation": dict(failures_by_expectation),
            "sample": sample[:10],
            "report_path": report_path,
        },
        operation="validate",
    )
    return record_error(error, integration=integration, dataset=dataset, flow_run_id=flow_run_id)


def list_errors(
    *, status: str | None = None, integration: str | None = None, dataset: str | None = None, limit: int = 50
) -> list[IntegrationErrorRow]:
    with session_scope() as session:
        query = select(IntegrationErrorRow).order_by(IntegrationErrorRow.id.desc()).limit(limit)
        if status:
            query = query.where(IntegrationErrorRow.status == status)
        if integration:
            query = query.where(IntegrationErrorRow.integration == integration)
        if dataset:
            query = query.where(IntegrationErrorRow.dataset == dataset)
        return list(session.scalars(query))


def resolve_open_errors(integration: str, dataset: str, *, note: str, categories: tuple[str, ...]) -> int:
    """Mark open errors of the given categories resolved (a later successful run fixed them)."""
    now = datetime.now(UTC)
    with session_scope() as session:
        result = session.execute(
            update(IntegrationErrorRow)
            .where(
                IntegrationErrorRow.integration == integration,
                IntegrationErrorRow.dataset == dataset,
                IntegrationErrorRow.status.in_([ErrorStatus.PENDING.value, ErrorStatus.RETRYING.value]),
                IntegrationErrorRow.error_type.in_(categories),
            )
            .values(status=ErrorStatus.RESOLVED.value, resolved_at=now, resolution_note=note, updated_at=now)
        )
        return int(cast(CursorResult[Any], result).rowcount or 0)
