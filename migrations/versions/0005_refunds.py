"""payments.amount_refunded: paise refunded so far, so a partial refund is recorded without marking the
payment refunded

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-30
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table('payments', schema=None) as batch_op:
        batch_op.add_column(sa.Column(
            'amount_refunded', sa.BigInteger(), nullable=True,
            comment='paise refunded so far (Razorpay payment.amount_refunded, from refund.processed or a poll); null before any refund',
        ))


def downgrade() -> None:
    with op.batch_alter_table('payments', schema=None) as batch_op:
        batch_op.drop_column('amount_refunded')
