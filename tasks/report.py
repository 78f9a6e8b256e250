"""Run summaries as Prefect artifacts, so data engineers see them in the Prefect UI."""

from __future__ import annotations

import json
from typing import Any

from prefect.artifacts import create_markdown_artifact, create_table_artifact

from connectors.core.redact import redact_mapping, redact_text

_ROWS = [
    ("mode", "Mode"),
    ("since", "Since (watermark read)"),
    ("watermark", "Watermark written"),
    ("batches", "Batches"),
    ("pages", "Pages"),
    ("source_count", "Source count for the read ($count)"),
    ("extracted", "Extracted"),
    ("distinct_read", "Distinct keys read"),
    ("duplicates", "Exact duplicates dropped"),
    ("mapped", "Mapped"),
    ("valid", "Valid"),
    ("quarantined", "Quarantined"),
    ("upserted", "Upserted (new or changed)"),
    ("unchanged", "Unchanged"),
    ("retries", "HTTP retries"),
    ("seconds", "Duration (s)"),
    ("report_path", "Validation report (Data Docs)"),
    ("error_ids", "integration_errors rows"),
]


_NOT_FIGURES = {"integration", "dataset", "flow_run_id"}


def artifact_key(integration: str, dataset: str) -> str:
    """Prefect artifact keys allow lowercase letters, digits and dashes only."""
    return f"{integration}-{dataset}-sync-summary".lower().replace("_", "-")


def publish_sync_summary(summary: dict[str, Any]) -> None:
    """A table artifact (one row per figure) plus a short markdown note pointing at the report."""
    safe = redact_mapping(summary)
    table = [{"figure": label, "value": "" if safe.get(key) is None else str(safe.get(key))} for key, label in _ROWS]
    # A dataset's own figures (Razorpay's applied/stale, a calendar's pushed, ...) follow the common ones.
    known = {key for key, _ in _ROWS} | _NOT_FIGURES
    table += [
        {"figure": key.replace("_", " "), "value": str(value)}
        for key, value in safe.items()
        if key not in known and isinstance(value, str | int | float) and not isinstance(value, bool)
    ]
    key = artifact_key(safe["integration"], safe["dataset"])
    create_table_artifact(
        key=key,
        table=table,
        description=f"{safe['integration']} {safe['dataset']} sync: {safe['upserted']} upserted, {safe['quarantined']} quarantined",
    )
    if safe.get("quarantined"):
        create_markdown_artifact(
            key=f"{key}-quarantine",
            markdown=(
                f"**{safe['quarantined']} {safe['dataset']} rows quarantined** (not loaded).\n\n"
                f"Validation report: `{safe.get('report_path')}`\n\n"
                f"Review: `drymix quarantine list --integration {safe['integration']} --dataset {safe['dataset']}` "
                "(each row with the expectations it failed). After a fix of the source, mapping or suite: "
                f"`drymix quarantine replay --integration {safe['integration']} --dataset {safe['dataset']}`; "
                "or `drymix quarantine discard <ids> --reason '...'`."
            ),
            description="rows refused by validation",
        )


def failure_artifact_key(integration: str, dataset: str | None) -> str:
    return f"{integration}-{dataset or 'run'}-failure".lower().replace("_", "-")


def publish_error_row(
    error: Any,
    error_id: int,
    *,
    integration: str,
    dataset: str | None,
    unit: dict[str, Any] | None = None,
    rerun_hint: str | None = None,
) -> str:
    """Make a failed run say which `integration_errors` row it produced and which command reruns it.

    Publishes a markdown artifact on the run and appends the row id and the command to the error's
    message, so Prefect's final state message ("Flow run encountered an exception: ...") carries them.
    A unit with a rerun handler (hub/ledger/retry_units.py) is rerun by `drymix errors retry <id>`; otherwise
    `rerun_hint` says what reruns the work. Returns the appended hint. Reusable by any flow that recorded
    its failure with `record_error`.
    """
    from hub.ledger.errors import retry_command
    from hub.ledger.retry_units import rerun_spec

    spec = rerun_spec(unit)
    if spec is not None:
        hint = f"integration_errors #{error_id}; rerun: `{retry_command(error_id)}`"
    else:
        hint = f"integration_errors #{error_id}; details: `drymix errors show {error_id}`" + (f"; rerun: {rerun_hint}" if rerun_hint else "")
    lines = [
        f"## {integration} {dataset or ''} failed: integration_errors #{error_id}",
        "",
        f"**{redact_text(str(error))[:1500]}**",
        "",
        f"- Category: `{getattr(getattr(error, 'category', None), 'value', type(error).__name__)}`",
        f"- What to do: {getattr(error, 'remedy', '') or '-'}",
        f"- Details and audit trail: `drymix errors show {error_id}`",
    ]
    if spec is not None:
        lines.append(f"- Rerun only the failed unit ({spec.description}): `{retry_command(error_id)}`; "
                     "the retry-failed-units flow also reruns it when it comes due")
    elif rerun_hint:
        lines.append(f"- Rerun: {rerun_hint}")
    if unit:
        lines += ["", "Failed unit:", "", "```json", json.dumps(redact_mapping(unit), indent=2, default=str)[:3000], "```"]
    create_markdown_artifact(
        key=failure_artifact_key(integration, dataset),
        markdown="\n".join(lines),
        description=hint,
    )
    if hasattr(error, "message") and isinstance(error.message, str) and hint not in error.message:
        error.message = f"{error.message} -> {hint}"
    return hint
