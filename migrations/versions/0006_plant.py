"""plant: plant_readings and production_batches (OPC UA plant collection)

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-30
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import hub.core.models

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "plant_readings",
        sa.Column("id", hub.core.models.IdType, autoincrement=True, nullable=False),
        sa.Column("reading_key", sa.String(length=64), nullable=False, comment="sha1 of tag + source timestamp (server timestamp when the source has none)"),
        sa.Column("tag", sa.String(length=128), nullable=False, comment="browse path below the plant folder, e.g. Mixers/M1/MotorCurrent"),
        sa.Column("node_id", sa.String(length=255), nullable=False, comment="OPC UA NodeId string, e.g. ns=2;s=Mixers.M1.MotorCurrent"),
        sa.Column("equipment", sa.String(length=64), nullable=True, comment="mixer / scale / silo / dryer the tag belongs to"),
        sa.Column("value", sa.Float(), nullable=True, comment="numeric value (None for text tags or a bad value)"),
        sa.Column("value_text", sa.String(length=255), nullable=True, comment="text value (state, material, batch id)"),
        sa.Column("unit", sa.String(length=16), nullable=True, comment="engineering unit (EUInformation display name): kg, %, A, degC, s"),
        sa.Column("status_code", sa.BigInteger(), nullable=False, comment="OPC UA StatusCode value (0 = Good)"),
        sa.Column("status_name", sa.String(length=64), nullable=False, comment="StatusCode symbolic name, e.g. Good, BadSensorFailure"),
        sa.Column("quality", sa.String(length=16), nullable=False, comment="good | uncertain | bad | stale"),
        sa.Column("source_timestamp", hub.core.models.UTCDateTime(timezone=True), nullable=True, comment="DataValue.SourceTimestamp"),
        sa.Column("server_timestamp", hub.core.models.UTCDateTime(timezone=True), nullable=True, comment="DataValue.ServerTimestamp"),
        sa.Column("collected_at", hub.core.models.UTCDateTime(timezone=True), nullable=False, comment="when the hub read it (before buffering)"),
        sa.Column("quality_flags", hub.core.models.JsonType, nullable=True, comment="bad_quality, stale, out_of_range ..."),
        sa.Column("row_hash", sa.String(length=32), nullable=False),
        sa.Column("loaded_at", hub.core.models.UTCDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_plant_readings")),
        sa.UniqueConstraint("reading_key", name="uq_plant_readings_reading_key"),
    )
    with op.batch_alter_table("plant_readings", schema=None) as batch_op:
        batch_op.create_index("ix_plant_readings_tag_source_timestamp", ["tag", "source_timestamp"], unique=False)

    op.create_table(
        "production_batches",
        sa.Column("id", hub.core.models.IdType, autoincrement=True, nullable=False),
        sa.Column("batch_id", sa.String(length=64), nullable=False, comment="plant batch id, e.g. B-M1-000123"),
        sa.Column("batch_seq", sa.BigInteger(), nullable=False, comment="server's monotonically increasing batch counter"),
        sa.Column("product_code", sa.String(length=32), nullable=False),
        sa.Column("recipe_code", sa.String(length=32), nullable=False),
        sa.Column("mixer", sa.String(length=16), nullable=False),
        sa.Column("started_at", hub.core.models.UTCDateTime(timezone=True), nullable=False),
        sa.Column("ended_at", hub.core.models.UTCDateTime(timezone=True), nullable=False),
        sa.Column("mixing_time_s", sa.Float(), nullable=True),
        sa.Column("total_target_kg", sa.Float(), nullable=True),
        sa.Column("total_actual_kg", sa.Float(), nullable=True),
        sa.Column("max_deviation_pct", sa.Float(), nullable=True, comment="largest |actual - target| / target of a component, in %"),
        sa.Column("components", hub.core.models.JsonType, nullable=False, comment="[{component, material, target_kg, actual_kg, deviation_pct}]"),
        sa.Column("quality_flags", hub.core.models.JsonType, nullable=True, comment="dosing_out_of_tolerance ..."),
        sa.Column("row_hash", sa.String(length=32), nullable=False),
        sa.Column("source_run_id", sa.String(length=64), nullable=True),
        sa.Column("loaded_at", hub.core.models.UTCDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_production_batches")),
        sa.UniqueConstraint("batch_id", name="uq_production_batches_batch_id"),
    )
    with op.batch_alter_table("production_batches", schema=None) as batch_op:
        batch_op.create_index("ix_production_batches_ended_at", ["ended_at"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("production_batches", schema=None) as batch_op:
        batch_op.drop_index("ix_production_batches_ended_at")
    op.drop_table("production_batches")
    with op.batch_alter_table("plant_readings", schema=None) as batch_op:
        batch_op.drop_index("ix_plant_readings_tag_source_timestamp")
    op.drop_table("plant_readings")
