"""document_outbox: ERP documents waiting for (or done with) their upload to SharePoint

Revision ID: 0008
Revises: 0007
Create Date: 2026-11-30
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

import hub.core.models

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table('document_outbox',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), autoincrement=True, nullable=False),
    sa.Column('document_key', sa.String(length=128), nullable=False, comment='ERP key of the document (e.g. INV-2026-000123): one upload per key'),
    sa.Column('source_path', sa.Text(), nullable=True, comment="file on the hub's disk to upload (streamed), or null when content is set"),
    sa.Column('content', sa.LargeBinary(), nullable=True, comment="the document's bytes, for small documents the ERP hands over directly"),
    sa.Column('drive_id', sa.String(length=255), nullable=True, comment='target document library; null = MICROSOFT365_DRIVE_ID'),
    sa.Column('folder_path', sa.String(length=400), nullable=False, comment='folder in the library, e.g. ERP/Invoices (one of the known folders)'),
    sa.Column('file_name', sa.String(length=255), nullable=False, comment='name in SharePoint (no " * : < > ? / \\ |, no leading/trailing space)'),
    sa.Column('content_type', sa.String(length=128), nullable=True),
    sa.Column('size_bytes', sa.BigInteger(), nullable=True, comment='set by the flow from the file or content'),
    sa.Column('document_metadata', sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), 'postgresql'), nullable=True, comment='ERP metadata (customer, order, batch, ...)'),
    sa.Column('conflict_policy', sa.String(length=8), nullable=False, comment='replace | rename | fail when the name exists'),
    sa.Column('status', sa.String(length=16), nullable=False),
    sa.Column('attempts', sa.Integer(), nullable=False),
    sa.Column('drive_item_id', sa.String(length=255), nullable=True, comment='Graph driveItem id once uploaded'),
    sa.Column('web_url', sa.Text(), nullable=True, comment='SharePoint URL of the uploaded file'),
    sa.Column('uploaded_name', sa.String(length=255), nullable=True, comment='name SharePoint stored (differs under rename)'),
    sa.Column('upload_url', sa.Text(), nullable=True, comment='open upload session (pre-authenticated URL) to resume from'),
    sa.Column('bytes_confirmed', sa.BigInteger(), nullable=False, comment='bytes the upload session confirmed (nextExpectedRanges)'),
    sa.Column('upload_expires_at', hub.core.models.UTCDateTime(timezone=True), nullable=True),
    sa.Column('error_code', sa.String(length=128), nullable=True),
    sa.Column('last_error', sa.Text(), nullable=True),
    sa.Column('next_attempt_at', hub.core.models.UTCDateTime(timezone=True), nullable=True, comment='not retried before this time (backoff)'),
    sa.Column('created_at', hub.core.models.UTCDateTime(timezone=True), nullable=False),
    sa.Column('updated_at', hub.core.models.UTCDateTime(timezone=True), nullable=False),
    sa.Column('uploaded_at', hub.core.models.UTCDateTime(timezone=True), nullable=True),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_document_outbox')),
    sa.UniqueConstraint('document_key', name=op.f('uq_document_outbox_document_key'))
    )
    with op.batch_alter_table('document_outbox', schema=None) as batch_op:
        batch_op.create_index('ix_document_outbox_status', ['status', 'next_attempt_at', 'id'], unique=False)


def downgrade() -> None:
    with op.batch_alter_table('document_outbox', schema=None) as batch_op:
        batch_op.drop_index('ix_document_outbox_status')
    op.drop_table('document_outbox')
