"""integration_errors.stack_trace: the failure's traceback, redacted and bounded (issue 18, item 2)

Revision ID: 0015
Revises: 0014
Create Date: 2026-12-03
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0015"
down_revision: str | None = "0014"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("integration_errors", schema=None) as batch_op:
        batch_op.add_column(sa.Column("stack_trace", sa.Text(), nullable=True,
                                      comment="the traceback that ended the unit: redacted, innermost frames kept (hub/ledger/errors.py)"))


def downgrade() -> None:
    with op.batch_alter_table("integration_errors", schema=None) as batch_op:
        batch_op.drop_column("stack_trace")
