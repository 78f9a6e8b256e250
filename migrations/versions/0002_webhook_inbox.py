"""webhook inbox: events, rejections, one-time tokens

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-28
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

import hub.core.models

revision: str = '0002'
down_revision: str | None = '0001'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table('webhook_events',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), autoincrement=True, nullable=False),
    sa.Column('provider', sa.String(length=32), nullable=False),
    sa.Column('event_id', sa.String(length=255), nullable=False, comment='razorpay: x-razorpay-event-id; whatsapp: message:<wamid> or status:<wamid>:<status>'),
    sa.Column('event_type', sa.String(length=64), nullable=False),
    sa.Column('body', sa.LargeBinary(), nullable=False, comment='the raw request body, byte for byte as signed'),
    sa.Column('headers', sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), 'postgresql'), nullable=False, comment='request headers, redacted of secrets'),
    sa.Column('remote_addr', sa.String(length=64), nullable=True),
    sa.Column('received_at', hub.core.models.UTCDateTime(timezone=True), nullable=False),
    sa.Column('status', sa.String(length=16), nullable=False),
    sa.Column('attempts', sa.Integer(), nullable=False),
    sa.Column('processed_at', hub.core.models.UTCDateTime(timezone=True), nullable=True),
    sa.Column('last_error', sa.Text(), nullable=True),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_webhook_events')),
    sa.UniqueConstraint('provider', 'event_id', name='uq_webhook_events_provider_event_id')
    )
    with op.batch_alter_table('webhook_events', schema=None) as batch_op:
        batch_op.create_index('ix_webhook_events_status', ['status', 'provider', 'id'], unique=False)

    op.create_table('webhook_rejections',
    sa.Column('provider', sa.String(length=32), nullable=False),
    sa.Column('reason', sa.String(length=32), nullable=False),
    sa.Column('window_start', hub.core.models.UTCDateTime(timezone=True), nullable=False, comment='the minute the rejections fell in'),
    sa.Column('count', sa.BigInteger(), nullable=False),
    sa.Column('last_remote_addr', sa.String(length=64), nullable=True),
    sa.Column('last_seen_at', hub.core.models.UTCDateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('provider', 'reason', 'window_start', name=op.f('pk_webhook_rejections'))
    )
    op.create_table('webhook_tokens',
    sa.Column('token_hash', sa.String(length=64), nullable=False, comment='sha256 hex of the token'),
    sa.Column('provider', sa.String(length=32), nullable=False),
    sa.Column('created_at', hub.core.models.UTCDateTime(timezone=True), nullable=False),
    sa.Column('expires_at', hub.core.models.UTCDateTime(timezone=True), nullable=False),
    sa.Column('used_at', hub.core.models.UTCDateTime(timezone=True), nullable=True),
    sa.PrimaryKeyConstraint('token_hash', name=op.f('pk_webhook_tokens'))
    )


def downgrade() -> None:
    op.drop_table('webhook_tokens')
    op.drop_table('webhook_rejections')
    with op.batch_alter_table('webhook_events', schema=None) as batch_op:
        batch_op.drop_index('ix_webhook_events_status')

    op.drop_table('webhook_events')
