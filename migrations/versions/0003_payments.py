"""payments: Razorpay orders and their payment state

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-28
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import hub.core.models

revision: str = '0003'
down_revision: str | None = '0002'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table('payments',
    sa.Column('order_id', sa.String(length=40), nullable=False, comment='Razorpay order id (order_...)'),
    sa.Column('receipt', sa.String(length=40), nullable=True, comment='our receipt (invoice number) sent with the order'),
    sa.Column('amount_paise', sa.BigInteger(), nullable=True, comment='order amount in paise'),
    sa.Column('currency', sa.String(length=3), nullable=True),
    sa.Column('order_status', sa.String(length=16), nullable=False, comment='created | attempted | paid'),
    sa.Column('payment_id', sa.String(length=40), nullable=True, comment='Razorpay payment id (pay_...) of the attempt that decides the state'),
    sa.Column('payment_status', sa.String(length=16), nullable=False, comment='created | authorized | captured | failed | refunded'),
    sa.Column('method', sa.String(length=32), nullable=True, comment='upi, card, netbanking, wallet, ...'),
    sa.Column('error_code', sa.String(length=64), nullable=True),
    sa.Column('error_description', sa.Text(), nullable=True),
    sa.Column('captured_at', hub.core.models.UTCDateTime(timezone=True), nullable=True, comment='when the hub first saw the payment captured'),
    sa.Column('last_event_id', sa.String(length=64), nullable=True, comment='x-razorpay-event-id of the last applied webhook'),
    sa.Column('last_event_at', hub.core.models.UTCDateTime(timezone=True), nullable=True, comment='provider time of the state in the row (event or payment created_at)'),
    sa.Column('source', sa.String(length=16), nullable=False, comment='api (order created by the hub) | webhook | reconciliation: what last moved the row'),
    sa.Column('created_at', hub.core.models.UTCDateTime(timezone=True), nullable=False),
    sa.Column('updated_at', hub.core.models.UTCDateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('order_id', name=op.f('pk_payments'))
    )
    with op.batch_alter_table('payments', schema=None) as batch_op:
        batch_op.create_index('ix_payments_payment_id', ['payment_id'], unique=False)
        batch_op.create_index('ix_payments_receipt', ['receipt'], unique=False)


def downgrade() -> None:
    with op.batch_alter_table('payments', schema=None) as batch_op:
        batch_op.drop_index('ix_payments_receipt')
        batch_op.drop_index('ix_payments_payment_id')
    op.drop_table('payments')
