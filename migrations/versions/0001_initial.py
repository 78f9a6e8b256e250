"""initial schema: errors, sync state, quarantine, customers

Revision ID: 0001
Revises: (none)
Create Date: 2026-11-28
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

import hub.core.models

revision: str = '0001'
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:

    op.create_table('customers',
    sa.Column('customer_id', sa.String(length=10), nullable=False, comment='SAP A_BusinessPartner.BusinessPartner'),
    sa.Column('sap_customer', sa.String(length=10), nullable=True, comment='SAP A_BusinessPartner.Customer'),
    sa.Column('category', sa.String(length=16), nullable=False, comment='SAP BusinessPartnerCategory: 1=person, 2=organization'),
    sa.Column('name', sa.String(length=81), nullable=False, comment='SAP BusinessPartnerFullName, else OrganizationBPName1, else FirstName LastName'),
    sa.Column('first_name', sa.String(length=40), nullable=True, comment='SAP FirstName'),
    sa.Column('last_name', sa.String(length=40), nullable=True, comment='SAP LastName'),
    sa.Column('search_term', sa.String(length=20), nullable=True, comment='SAP SearchTerm1'),
    sa.Column('bp_grouping', sa.String(length=4), nullable=True, comment='SAP BusinessPartnerGrouping'),
    sa.Column('language', sa.String(length=2), nullable=True, comment='SAP CorrespondenceLanguage'),
    sa.Column('industry', sa.String(length=10), nullable=True, comment='SAP Industry'),
    sa.Column('email', sa.String(length=241), nullable=True, comment='SAP to_BusinessPartnerAddress/to_EmailAddress/EmailAddress (first)'),
    sa.Column('phone', sa.String(length=30), nullable=True, comment='SAP .../to_PhoneNumber InternationalPhoneNumber, else PhoneNumber normalised to E.164'),
    sa.Column('mobile', sa.String(length=30), nullable=True, comment='SAP .../to_MobilePhoneNumber, normalised to E.164'),
    sa.Column('street', sa.String(length=60), nullable=True, comment='SAP to_BusinessPartnerAddress/StreetName'),
    sa.Column('house_number', sa.String(length=10), nullable=True, comment='SAP to_BusinessPartnerAddress/HouseNumber'),
    sa.Column('city', sa.String(length=40), nullable=True, comment='SAP to_BusinessPartnerAddress/CityName'),
    sa.Column('postal_code', sa.String(length=10), nullable=True, comment='SAP to_BusinessPartnerAddress/PostalCode'),
    sa.Column('region', sa.String(length=3), nullable=True, comment='SAP to_BusinessPartnerAddress/Region'),
    sa.Column('country', sa.String(length=3), nullable=False, comment='SAP to_BusinessPartnerAddress/Country (ISO 3166-1 alpha-2)'),
    sa.Column('gstin', sa.String(length=20), nullable=True, comment='SAP to_BusinessPartnerTax BPTaxNumber where BPTaxType = IN3'),
    sa.Column('account_group', sa.String(length=4), nullable=True, comment='SAP to_Customer/CustomerAccountGroup'),
    sa.Column('is_blocked', sa.Boolean(), nullable=False, comment='SAP BusinessPartnerIsBlocked'),
    sa.Column('is_archived', sa.Boolean(), nullable=False, comment='SAP IsMarkedForArchiving'),
    sa.Column('deletion_flag', sa.Boolean(), nullable=False, comment='SAP to_Customer/DeletionIndicator'),
    sa.Column('order_block', sa.String(length=2), nullable=True, comment='SAP to_Customer/OrderIsBlockedForCustomer'),
    sa.Column('sap_created_at', hub.core.models.UTCDateTime(timezone=True), nullable=True, comment='SAP CreationDate + CreationTime'),
    sa.Column('sap_changed_at', hub.core.models.UTCDateTime(timezone=True), nullable=False, comment='SAP LastChangeDate + LastChangeTime (else creation)'),
    sa.Column('row_hash', sa.String(length=32), nullable=False, comment='digest of the mapped columns: unchanged rows are not rewritten'),
    sa.Column('source_run_id', sa.String(length=64), nullable=True, comment='flow run that last wrote the row'),
    sa.Column('synced_at', hub.core.models.UTCDateTime(timezone=True), nullable=False, comment='when the hub last wrote the row'),
    sa.PrimaryKeyConstraint('customer_id', name=op.f('pk_customers'))
    )
    with op.batch_alter_table('customers', schema=None) as batch_op:
        batch_op.create_index('ix_customers_gstin', ['gstin'], unique=False)
        batch_op.create_index('ix_customers_sap_changed_at', ['sap_changed_at'], unique=False)

    op.create_table('integration_errors',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), autoincrement=True, nullable=False),
    sa.Column('org_id', sa.String(length=64), nullable=False),
    sa.Column('integration', sa.String(length=64), nullable=False),
    sa.Column('dataset', sa.String(length=64), nullable=True),
    sa.Column('operation', sa.String(length=128), nullable=True),
    sa.Column('error_code', sa.String(length=128), nullable=True),
    sa.Column('error_message', sa.Text(), nullable=False),
    sa.Column('error_type', sa.String(length=32), nullable=False, comment='category: AUTHENTICATION_FAILED ... SYNC_FAILED'),
    sa.Column('severity', sa.String(length=16), nullable=False),
    sa.Column('transient', sa.Boolean(), nullable=False),
    sa.Column('http_status', sa.Integer(), nullable=True),
    sa.Column('request_data', sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), 'postgresql'), nullable=True, comment='redacted of credentials'),
    sa.Column('response_data', sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), 'postgresql'), nullable=True, comment='redacted of credentials'),
    sa.Column('unit', sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), 'postgresql'), nullable=True, comment='the failed unit of work (page/batch position)'),
    sa.Column('remedy', sa.Text(), nullable=True, comment='what on-call should do'),
    sa.Column('retry_count', sa.Integer(), nullable=False),
    sa.Column('max_retries', sa.Integer(), nullable=False),
    sa.Column('status', sa.String(length=16), nullable=False),
    sa.Column('flow_run_id', sa.String(length=64), nullable=True),
    sa.Column('next_retry_at', hub.core.models.UTCDateTime(timezone=True), nullable=True),
    sa.Column('created_at', hub.core.models.UTCDateTime(timezone=True), nullable=False),
    sa.Column('updated_at', hub.core.models.UTCDateTime(timezone=True), nullable=False),
    sa.Column('resolved_at', hub.core.models.UTCDateTime(timezone=True), nullable=True),
    sa.Column('resolution_note', sa.Text(), nullable=True),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_integration_errors'))
    )
    with op.batch_alter_table('integration_errors', schema=None) as batch_op:
        batch_op.create_index('ix_integration_errors_created_at', ['created_at'], unique=False)
        batch_op.create_index('ix_integration_errors_status_integration', ['status', 'integration'], unique=False)

    op.create_table('quarantined_records',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), autoincrement=True, nullable=False),
    sa.Column('integration', sa.String(length=64), nullable=False),
    sa.Column('dataset', sa.String(length=64), nullable=False),
    sa.Column('record_key', sa.String(length=128), nullable=False, comment='source primary key, or a row digest when it has none'),
    sa.Column('raw_record', sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), 'postgresql'), nullable=False),
    sa.Column('mapped_record', sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), 'postgresql'), nullable=True),
    sa.Column('failed_expectations', sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), 'postgresql'), nullable=False),
    sa.Column('flow_run_id', sa.String(length=64), nullable=True),
    sa.Column('status', sa.String(length=16), nullable=False),
    sa.Column('seen_count', sa.Integer(), nullable=False),
    sa.Column('created_at', hub.core.models.UTCDateTime(timezone=True), nullable=False),
    sa.Column('updated_at', hub.core.models.UTCDateTime(timezone=True), nullable=False),
    sa.Column('resolution_note', sa.Text(), nullable=True),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_quarantined_records'))
    )
    with op.batch_alter_table('quarantined_records', schema=None) as batch_op:
        batch_op.create_index('ix_quarantined_records_status', ['status', 'integration', 'dataset'], unique=False)
        batch_op.create_index('uq_quarantined_records_open', ['integration', 'dataset', 'record_key'], unique=True, postgresql_where=sa.text("status = 'quarantined'"), sqlite_where=sa.text("status = 'quarantined'"))

    op.create_table('sync_state',
    sa.Column('integration', sa.String(length=64), nullable=False),
    sa.Column('dataset', sa.String(length=64), nullable=False),
    sa.Column('cursor', sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), 'postgresql'), nullable=True),
    sa.Column('last_run_id', sa.String(length=64), nullable=True),
    sa.Column('last_success_at', hub.core.models.UTCDateTime(timezone=True), nullable=True),
    sa.Column('rows_total', sa.BigInteger(), nullable=False),
    sa.Column('updated_at', hub.core.models.UTCDateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('integration', 'dataset', name=op.f('pk_sync_state'))
    )



def downgrade() -> None:

    op.drop_table('sync_state')
    with op.batch_alter_table('quarantined_records', schema=None) as batch_op:
        batch_op.drop_index('uq_quarantined_records_open', postgresql_where=sa.text("status = 'quarantined'"), sqlite_where=sa.text("status = 'quarantined'"))
        batch_op.drop_index('ix_quarantined_records_status')

    op.drop_table('quarantined_records')
    with op.batch_alter_table('integration_errors', schema=None) as batch_op:
        batch_op.drop_index('ix_integration_errors_status_integration')
        batch_op.drop_index('ix_integration_errors_created_at')

    op.drop_table('integration_errors')
    with op.batch_alter_table('customers', schema=None) as batch_op:
        batch_op.drop_index('ix_customers_sap_changed_at')
        batch_op.drop_index('ix_customers_gstin')

    op.drop_table('customers')

