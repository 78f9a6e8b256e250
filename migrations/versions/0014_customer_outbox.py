"""customer_outbox: ERP customer creations and changes waiting for their push to SAP; customers.erp_ref

Revision ID: 0014
Revises: 0013
Create Date: 2026-12-03
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

import hub.core.models

revision: str = "0014"
down_revision: str | None = "0013"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "customer_outbox",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), autoincrement=True, nullable=False),
        sa.Column("erp_ref", sa.String(length=20), nullable=False, comment="the ERP's customer key (ERP-000123): SAP BusinessPartnerIDByExtSystem"),
        sa.Column("operation", sa.String(length=8), nullable=False, comment="create | update"),
        sa.Column("partner", sa.String(length=10), nullable=True, comment="SAP BusinessPartner when known; written back after a create"),
        sa.Column("fields", sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"), nullable=False,
                  comment="the ERP's customer fields (hub/systems/sap_push.py ERP_FIELDS)"),
        sa.Column("base_fields", sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"), nullable=True,
                  comment="the partner as the ERP saw it (its customers row) when it made the change: SAP's edits since tell from the ERP's"),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("next_attempt_at", hub.core.models.UTCDateTime(timezone=True), nullable=True,
                  comment="not pushed before this time (backoff after a transient failure)"),
        sa.Column("last_error_id", sa.BigInteger(), nullable=True, comment="integration_errors row of the last failure or conflict"),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("sap_etag", sa.String(length=128), nullable=True, comment="the partner's ETag after our last write (or as read before it)"),
        sa.Column("created_at", hub.core.models.UTCDateTime(timezone=True), nullable=False),
        sa.Column("updated_at", hub.core.models.UTCDateTime(timezone=True), nullable=False),
        sa.Column("pushed_at", hub.core.models.UTCDateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_customer_outbox_status", "customer_outbox", ["status", "next_attempt_at", "id"], unique=False)
    op.create_index("ix_customer_outbox_erp_ref", "customer_outbox", ["erp_ref"], unique=False)
    with op.batch_alter_table("customers", schema=None) as batch_op:
        batch_op.add_column(sa.Column("erp_ref", sa.String(length=20), nullable=True,
                                      comment="the ERP's own customer key (SAP BusinessPartnerIDByExtSystem)"))
        batch_op.create_index("ix_customers_erp_ref", ["erp_ref"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("customers", schema=None) as batch_op:
        batch_op.drop_index("ix_customers_erp_ref")
        batch_op.drop_column("erp_ref")
    op.drop_index("ix_customer_outbox_erp_ref", table_name="customer_outbox")
    op.drop_index("ix_customer_outbox_status", table_name="customer_outbox")
    op.drop_table("customer_outbox")
