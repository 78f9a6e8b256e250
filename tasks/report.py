"""Run summaries as Prefect artifacts, so data engineers see them in the Prefect UI."""

from __future__ import annotations

from typing import Any

from prefect.artifacts import create_markdown_artifact, create_table_artifact

from connectors.core.redact import redact_mapping

_ROWS = [
    ("mode", "Mode"),
    ("since", "Since (watermark read)"),
    ("watermark", "Watermark written"),
    ("batches", "Batches"),
    ("pages", "Pages"),
    ("extracted", "Extracted"),
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


def artifact_key(integration: str, dataset: str) -> str:
    """Prefect artifact keys allow lowercase letters, digits and dashes only."""
    return f"{integration}-{dataset}-sync-summary".lower().replace("_", "-")


def publish_sync_summary(summary: dict[str, Any]) -> None:
    """A table artifact (one row per figure) plus a short markdown note pointing at the report."""
    safe = redact_mapping(summary)
    table = [{"figure": label, "value": "" if safe.get(key) is None else str(safe.get(key))} for key, label in _ROWS]
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
                f"Review: `drymix errors list --integration {safe['integration']}` and the "
                "`quarantined_records` table."
            ),
            description="rows refused by validation",
        )
