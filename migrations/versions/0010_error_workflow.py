"""error workflow: integration_errors lifecycle columns, its audit trail, quarantine links

Revision ID: 0010
Revises: 0009
Create Date: 2026-11-30
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

import hub.core.models

revision: str = "0010"
down_revision: str | None = "0009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("integration_errors", schema=None) as batch_op:
        batch_op.add_column(sa.Column("attempts", sa.Integer(), server_default="0", nullable=False, comment="queued reruns of the unit made so far"))
        batch_op.add_column(sa.Column("max_attempts", sa.Integer(), server_default="0", nullable=False, comment="queued reruns allowed before escalation (0: none)"))
        batch_op.add_column(sa.Column("last_attempt_at", hub.core.models.UTCDateTime(timezone=True), nullable=True))
        batch_op.add_column(sa.Column("escalated_at", hub.core.models.UTCDateTime(timezone=True), nullable=True))
        batch_op.add_column(sa.Column("resolved_by", sa.String(length=128), nullable=True, comment="who resolved it: a person, or the flow that did"))
        batch_op.create_index("ix_integration_errors_status_next_retry_at", ["status", "next_retry_at"], unique=False)

    with op.batch_alter_table("quarantined_records", schema=None) as batch_op:
        batch_op.add_column(sa.Column("error_id", sa.BigInteger(), nullable=True, comment="integration_errors.id of the run that last refused it"))
        batch_op.add_column(sa.Column("resolved_by", sa.String(length=128), nullable=True))
        batch_op.add_column(sa.Column("resolved_at", hub.core.models.UTCDateTime(timezone=True), nullable=True))
        batch_op.create_index("ix_quarantined_records_error_id", ["error_id"], unique=False)

    op.create_table(
        "integration_error_events",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), autoincrement=True, nullable=False),
        sa.Column("error_id", sa.BigInteger(), nullable=False),
        sa.Column("at", hub.core.models.UTCDateTime(timezone=True), nullable=False),
        sa.Column("actor", sa.String(length=128), nullable=False, comment="a person (--by, default the OS user) or a flow (flow:<name>)"),
        sa.Column("action", sa.String(length=32), nullable=False, comment="recorded | retry_scheduled | retry_started | retry_failed | resolved | escalated | ..."),
        sa.Column("from_status", sa.String(length=16), nullable=True),
        sa.Column("to_status", sa.String(length=16), nullable=True),
        sa.Column("reason", sa.Text(), nullable=True),
        sa.Column("details", sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"), nullable=True),
        sa.ForeignKeyConstraint(["error_id"], ["integration_errors.id"], name=op.f("fk_integration_error_events_error_id_integration_errors"), ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_integration_error_events")),
    )
    with op.batch_alter_table("integration_error_events", schema=None) as batch_op:
        batch_op.create_index("ix_integration_error_events_error_id", ["error_id", "id"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("integration_error_events", schema=None) as batch_op:
        batch_op.drop_index("ix_integration_error_events_error_id")
    op.drop_table("integration_error_events")
    with op.batch_alter_table("quarantined_records", schema=None) as batch_op:
        batch_op.drop_index("ix_quarantined_records_error_id")
        batch_op.drop_column("resolved_at")
        batch_op.drop_column("resolved_by")
        batch_op.drop_column("error_id")
    with op.batch_alter_table("integration_errors", schema=None) as batch_op:
        batch_op.drop_index("ix_integration_errors_status_next_retry_at")
        batch_op.drop_column("resolved_by")
        batch_op.drop_column("escalated_at")
        batch_op.drop_column("last_attempt_at")
        batch_op.drop_column("max_attempts")
        batch_op.drop_column("attempts")
