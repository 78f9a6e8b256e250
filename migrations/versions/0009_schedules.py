"""schedules: ERP schedules and their links to Microsoft 365 / Google Workspace calendar events

Revision ID: 0009
Revises: 0008
Create Date: 2026-11-30
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import hub.core.models

revision: str = "0009"
down_revision: str | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table('schedules',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), autoincrement=True, nullable=False),
    sa.Column('schedule_ref', sa.String(length=64), nullable=False, comment='ERP key of the schedule (e.g. DLV-2026-000123)'),
    sa.Column('kind', sa.String(length=16), nullable=False, comment='delivery | site_visit | maintenance'),
    sa.Column('title', sa.String(length=255), nullable=False),
    sa.Column('description', sa.Text(), nullable=True),
    sa.Column('location', sa.String(length=512), nullable=True),
    sa.Column('starts_at', hub.core.models.UTCDateTime(timezone=True), nullable=False),
    sa.Column('ends_at', hub.core.models.UTCDateTime(timezone=True), nullable=False),
    sa.Column('time_zone', sa.String(length=64), nullable=False, comment='IANA zone shown in calendars'),
    sa.Column('status', sa.String(length=16), nullable=False, comment='scheduled | cancelled'),
    sa.Column('owner', sa.String(length=16), nullable=False, comment='erp | calendar: who wins a conflict on content'),
    sa.Column('version', sa.Integer(), nullable=False, comment='bumped on every change made in the ERP or pulled from a calendar'),
    sa.Column('created_at', hub.core.models.UTCDateTime(timezone=True), nullable=False),
    sa.Column('updated_at', hub.core.models.UTCDateTime(timezone=True), nullable=False),
    sa.Column('updated_by', sa.String(length=128), nullable=True, comment='erp:<user> | google_workspace | microsoft365'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_schedules')),
    sa.UniqueConstraint('schedule_ref', name=op.f('uq_schedules_schedule_ref'))
    )
    with op.batch_alter_table('schedules', schema=None) as batch_op:
        batch_op.create_index('ix_schedules_starts_at', ['starts_at'], unique=False)
        batch_op.create_index('ix_schedules_status', ['status'], unique=False)

    op.create_table('schedule_calendar_links',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), autoincrement=True, nullable=False),
    sa.Column('schedule_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('provider', sa.String(length=32), nullable=False, comment='microsoft365 | google_workspace'),
    sa.Column('calendar_id', sa.String(length=255), nullable=False, comment='Google calendarId / Graph user or calendar id'),
    sa.Column('event_id', sa.String(length=1024), nullable=False, comment='provider event id'),
    sa.Column('etag', sa.String(length=255), nullable=True, comment='remote etag (Google etag, Graph @odata.etag) at the last sync'),
    sa.Column('pushed_version', sa.Integer(), nullable=True, comment='schedules.version the remote event matches'),
    sa.Column('remote_status', sa.String(length=16), nullable=True, comment='confirmed | tentative | cancelled, as last seen'),
    sa.Column('remote_updated_at', hub.core.models.UTCDateTime(timezone=True), nullable=True, comment='remote last-modified time at the last sync'),
    sa.Column('synced_at', hub.core.models.UTCDateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['schedule_id'], ['schedules.id'], name=op.f('fk_schedule_calendar_links_schedule_id_schedules'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_schedule_calendar_links')),
    sa.UniqueConstraint('provider', 'calendar_id', 'event_id', name='uq_schedule_calendar_links_event'),
    sa.UniqueConstraint('schedule_id', 'provider', 'calendar_id', name='uq_schedule_calendar_links_schedule')
    )


def downgrade() -> None:
    op.drop_table('schedule_calendar_links')
    with op.batch_alter_table('schedules', schema=None) as batch_op:
        batch_op.drop_index('ix_schedules_status')
        batch_op.drop_index('ix_schedules_starts_at')
    op.drop_table('schedules')
