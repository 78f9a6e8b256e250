"""monitoring: per-minute call metrics, their running totals, and alert state

Revision ID: 0011
Revises: 0010
Create Date: 2026-11-30
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

import hub.core.models

revision: str = "0011"
down_revision: str | None = "0010"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# Frozen copy of LATENCY_BUCKETS_S at the time of this revision (changing the buckets needs a migration).
_BOUNDS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 5.0, 10.0, 30.0)
_COUNTERS = ("calls", "successes", "errors", "rate_limited", "cache_hits", "cache_misses")


def _measurement_columns() -> list[sa.Column]:
    labels = [f"<= {b:g} s" for b in _BOUNDS] + [f"> {_BOUNDS[-1]:g} s"]
    return [
        *(sa.Column(name, sa.BigInteger(), nullable=False, server_default="0") for name in _COUNTERS),
        sa.Column("latency_sum_s", sa.Float(), nullable=False, server_default="0"),
        sa.Column("latency_max_s", sa.Float(), nullable=False, server_default="0"),
        *(
            sa.Column(f"h{i:02d}", sa.BigInteger(), nullable=False, server_default="0", comment=f"latency {label}")
            for i, label in enumerate(labels)
        ),
        sa.Column("last_success_at", hub.core.models.UTCDateTime(timezone=True), nullable=True),
        sa.Column("last_error_at", hub.core.models.UTCDateTime(timezone=True), nullable=True),
    ]


def upgrade() -> None:
    op.create_table(
        "call_metrics",
        sa.Column("bucket_start", hub.core.models.UTCDateTime(timezone=True), nullable=False, comment="start of the minute (UTC)"),
        sa.Column("integration", sa.String(length=64), nullable=False),
        sa.Column("operation", sa.String(length=128), nullable=False),
        sa.Column("kind", sa.String(length=24), nullable=False, comment="call | webhook | webhook_processing"),
        *_measurement_columns(),
        sa.PrimaryKeyConstraint("bucket_start", "integration", "operation", "kind", name="pk_call_metrics"),
    )
    with op.batch_alter_table("call_metrics", schema=None) as batch_op:
        batch_op.create_index("ix_call_metrics_integration_bucket", ["integration", "bucket_start"], unique=False)

    op.create_table(
        "call_metric_totals",
        sa.Column("integration", sa.String(length=64), nullable=False),
        sa.Column("operation", sa.String(length=128), nullable=False),
        sa.Column("kind", sa.String(length=24), nullable=False),
        *_measurement_columns(),
        sa.Column(
            "first_seen_at",
            hub.core.models.UTCDateTime(timezone=True),
            nullable=True,
            comment="first measurement (IntegrationDown when it never succeeded)",
        ),
        sa.PrimaryKeyConstraint("integration", "operation", "kind", name="pk_call_metric_totals"),
    )

    op.create_table(
        "alerts",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), autoincrement=True, nullable=False),
        sa.Column("rule", sa.String(length=32), nullable=False,
                  comment="IntegrationDown | HighErrorRate | RateLimitExceeded | SlowResponseTime | WebhookDelay"),
        sa.Column("integration", sa.String(length=64), nullable=False),
        sa.Column("severity", sa.String(length=16), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("summary", sa.Text(), nullable=False),
        sa.Column("value", sa.Float(), nullable=True, comment="the measured value when last evaluated"),
        sa.Column("threshold", sa.Float(), nullable=True),
        sa.Column("error_id", sa.BigInteger(), nullable=True,
                  comment="an unresolved integration_errors row: holds the alert until it is resolved"),
        sa.Column("started_at", hub.core.models.UTCDateTime(timezone=True), nullable=False),
        sa.Column("last_evaluated_at", hub.core.models.UTCDateTime(timezone=True), nullable=False),
        sa.Column("last_notified_at", hub.core.models.UTCDateTime(timezone=True), nullable=True),
        sa.Column("notifications_sent", sa.Integer(), nullable=False),
        sa.Column("resolved_at", hub.core.models.UTCDateTime(timezone=True), nullable=True),
        sa.Column("last_delivery", sa.JSON().with_variant(postgresql.JSONB(), "postgresql"), nullable=True,
                  comment="outcome per channel of the last notification"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_alerts")),
    )
    with op.batch_alter_table("alerts", schema=None) as batch_op:
        batch_op.create_index("ix_alerts_status_started_at", ["status", "started_at"], unique=False)
        batch_op.create_index(
            "uq_alerts_firing",
            ["rule", "integration"],
            unique=True,
            postgresql_where=sa.text("status = 'firing'"),
            sqlite_where=sa.text("status = 'firing'"),
        )


def downgrade() -> None:
    with op.batch_alter_table("alerts", schema=None) as batch_op:
        batch_op.drop_index("uq_alerts_firing")
        batch_op.drop_index("ix_alerts_status_started_at")
    op.drop_table("alerts")
    op.drop_table("call_metric_totals")
    with op.batch_alter_table("call_metrics", schema=None) as batch_op:
        batch_op.drop_index("ix_call_metrics_integration_bucket")
    op.drop_table("call_metrics")
