"""whatsapp_messages: WhatsApp messages and their latest status

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-28
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import hub.core.models

revision: str = '0004'
down_revision: str | None = '0003'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table('whatsapp_messages',
    sa.Column('wamid', sa.String(length=128), nullable=False, comment='WhatsApp message id (wamid....)'),
    sa.Column('direction', sa.String(length=8), nullable=False, comment='outbound (sent by the hub) | inbound (written by a customer)'),
    sa.Column('recipient', sa.String(length=32), nullable=True, comment='wa_id of the customer (outbound) or our phone number id (inbound)'),
    sa.Column('sender', sa.String(length=32), nullable=True, comment="our phone number id (outbound) or the customer's wa_id (inbound)"),
    sa.Column('message_type', sa.String(length=16), nullable=True, comment='text | template | image | ...'),
    sa.Column('template_name', sa.String(length=512), nullable=True),
    sa.Column('body', sa.Text(), nullable=True, comment='text body (outbound text, inbound text) or template parameters'),
    sa.Column('status', sa.String(length=16), nullable=False, comment='accepted | sent | delivered | read | failed (outbound); received (inbound)'),
    sa.Column('error_code', sa.Integer(), nullable=True, comment='Meta error code of a failed message'),
    sa.Column('error_title', sa.Text(), nullable=True),
    sa.Column('sent_at', hub.core.models.UTCDateTime(timezone=True), nullable=True, comment='provider time of the sent status'),
    sa.Column('delivered_at', hub.core.models.UTCDateTime(timezone=True), nullable=True),
    sa.Column('read_at', hub.core.models.UTCDateTime(timezone=True), nullable=True),
    sa.Column('failed_at', hub.core.models.UTCDateTime(timezone=True), nullable=True),
    sa.Column('last_event_id', sa.String(length=255), nullable=True, comment='inbox event id of the last applied webhook'),
    sa.Column('created_at', hub.core.models.UTCDateTime(timezone=True), nullable=False),
    sa.Column('updated_at', hub.core.models.UTCDateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('wamid', name=op.f('pk_whatsapp_messages'))
    )
    with op.batch_alter_table('whatsapp_messages', schema=None) as batch_op:
        batch_op.create_index('ix_whatsapp_messages_recipient', ['recipient'], unique=False)
        batch_op.create_index('ix_whatsapp_messages_status', ['status'], unique=False)


def downgrade() -> None:
    with op.batch_alter_table('whatsapp_messages', schema=None) as batch_op:
        batch_op.drop_index('ix_whatsapp_messages_status')
        batch_op.drop_index('ix_whatsapp_messages_recipient')
    op.drop_table('whatsapp_messages')
