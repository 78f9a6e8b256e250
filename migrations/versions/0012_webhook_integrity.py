"""webhook integrity: what the signature covers is recorded with each inbox event and each spent token

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-02
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import hub.core.models

revision: str = "0012"
down_revision: str | None = "0011"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("webhook_events", schema=None) as batch_op:
        batch_op.add_column(sa.Column("body_sha256", sa.String(64), nullable=True, comment="sha256 hex of the signed raw body"))
        batch_op.add_column(sa.Column(
            "provider_event_id", sa.String(255), nullable=True,
            comment="an id the provider sent outside the signature (x-razorpay-event-id): information, never the key",
        ))
        batch_op.add_column(sa.Column(
            "event_at", hub.core.models.UTCDateTime(timezone=True), nullable=True,
            comment="the payload's own time (Razorpay created_at, WhatsApp timestamp), inside the signed body",
        ))
    with op.batch_alter_table("webhook_tokens", schema=None) as batch_op:
        batch_op.add_column(sa.Column(
            "body_sha256", sa.String(64), nullable=True,
            comment="sha256 of the delivery stored under this token: its retry is acknowledged, anything else refused",
        ))


def downgrade() -> None:
    with op.batch_alter_table("webhook_tokens", schema=None) as batch_op:
        batch_op.drop_column("body_sha256")
    with op.batch_alter_table("webhook_events", schema=None) as batch_op:
        batch_op.drop_column("event_at")
        batch_op.drop_column("provider_event_id")
        batch_op.drop_column("body_sha256")
