"""lab_results and lab_exports: lab testing-machine results and the ledger of processed exports

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-30
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import hub.core.models

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "lab_results",
        sa.Column("specimen_id", sa.String(length=64), nullable=False, comment="the machine's specimen id, e.g. B-M1-000123-28D-P1A"),
        sa.Column("batch_id", sa.String(length=64), nullable=False, comment="production batch the specimen was cast from (plant batch id)"),
        sa.Column("product_code", sa.String(length=40), nullable=True, comment="product / recipe code as entered on the machine"),
        sa.Column("test_type", sa.String(length=16), nullable=False, comment="compressive | flexural"),
        sa.Column("test_standard", sa.String(length=40), nullable=True, comment="e.g. EN 1015-11:2019"),
        sa.Column("age_days", sa.Integer(), nullable=False, comment="specimen age at test, days (one of the planned ages)"),
        sa.Column("length_mm", sa.Float(), nullable=True, comment="measured specimen length (prism 160 mm)"),
        sa.Column("width_mm", sa.Float(), nullable=True, comment="measured width b"),
        sa.Column("height_mm", sa.Float(), nullable=True, comment="measured depth d"),
        sa.Column("span_mm", sa.Float(), nullable=True, comment="flexural support span l (100 mm)"),
        sa.Column("area_mm2", sa.Float(), nullable=True, comment="compressive loaded area (40 x 40 mm platens = 1600)"),
        sa.Column("peak_load_kn", sa.Float(), nullable=False, comment="maximum load F, kN"),
        sa.Column("strength_mpa", sa.Float(), nullable=False, comment="strength as reported by the machine, MPa (N/mm2)"),
        sa.Column("computed_strength_mpa", sa.Float(), nullable=True, comment="F/A or 1.5 F l / (b d^2) recomputed by the hub"),
        sa.Column("tested_at", hub.core.models.UTCDateTime(timezone=True), nullable=False, comment="test time (naive export times read in the lab's time zone)"),
        sa.Column("machine_id", sa.String(length=64), nullable=False, comment="testing machine, e.g. MATEST-C089"),
        sa.Column("operator", sa.String(length=64), nullable=True),
        sa.Column("batch_known", sa.Boolean(), nullable=False, comment="batch_id found in production_batches (re-checked each run)"),
        sa.Column("export_sha256", sa.String(length=64), nullable=False, comment="content checksum of the export the row came from (lab_exports.sha256)"),
        sa.Column("export_file", sa.String(length=255), nullable=True, comment="file name of that export"),
        sa.Column("source_line", sa.Integer(), nullable=True, comment="line of the row in the export file"),
        sa.Column("row_hash", sa.String(length=32), nullable=False, comment="digest of the mapped measurement: an unchanged re-export is not rewritten"),
        sa.Column("source_run_id", sa.String(length=64), nullable=True, comment="flow run that last wrote the row"),
        sa.Column("synced_at", hub.core.models.UTCDateTime(timezone=True), nullable=False, comment="when the hub last wrote the row"),
        sa.PrimaryKeyConstraint("specimen_id", name=op.f("pk_lab_results")),
    )
    with op.batch_alter_table("lab_results", schema=None) as batch_op:
        batch_op.create_index("ix_lab_results_batch_id", ["batch_id"], unique=False)
        batch_op.create_index("ix_lab_results_tested_at", ["tested_at"], unique=False)
        batch_op.create_index("ix_lab_results_batch_known", ["batch_known"], unique=False)

    op.create_table(
        "lab_exports",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), autoincrement=True, nullable=False),
        sa.Column("sha256", sa.String(length=64), nullable=False, comment="sha256 hex of the file content"),
        sa.Column("file_name", sa.String(length=255), nullable=False, comment="name the content first arrived under"),
        sa.Column("source", sa.String(length=16), nullable=False, comment="drop (file in the drop folder) | api"),
        sa.Column("size_bytes", sa.BigInteger(), nullable=False),
        sa.Column("file_mtime", hub.core.models.UTCDateTime(timezone=True), nullable=True, comment="modification time of the file when read"),
        sa.Column("received_at", hub.core.models.UTCDateTime(timezone=True), nullable=False, comment="when the hub read the file"),
        sa.Column("processed_at", hub.core.models.UTCDateTime(timezone=True), nullable=False, comment="commit time of its rows"),
        sa.Column("status", sa.String(length=16), nullable=False, comment="processed | rejected"),
        sa.Column("delimiter", sa.String(length=4), nullable=True),
        sa.Column("decimal_comma", sa.Boolean(), nullable=True),
        sa.Column("encoding", sa.String(length=16), nullable=True),
        sa.Column("rows_total", sa.Integer(), nullable=False, comment="data lines in the file"),
        sa.Column("rows_loaded", sa.Integer(), nullable=False, comment="rows that passed validation"),
        sa.Column("rows_written", sa.Integer(), nullable=False, comment="of those, new or changed lab_results rows"),
        sa.Column("rows_quarantined", sa.Integer(), nullable=False),
        sa.Column("flow_run_id", sa.String(length=64), nullable=True),
        sa.Column("duplicates_seen", sa.Integer(), nullable=False, comment="times the same content was dropped again"),
        sa.Column("last_duplicate_name", sa.String(length=255), nullable=True),
        sa.Column("last_duplicate_at", hub.core.models.UTCDateTime(timezone=True), nullable=True),
        sa.Column("note", sa.Text(), nullable=True, comment="why a rejected file was rejected"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_lab_exports")),
        sa.UniqueConstraint("sha256", name="uq_lab_exports_sha256"),
    )
    with op.batch_alter_table("lab_exports", schema=None) as batch_op:
        batch_op.create_index("ix_lab_exports_processed_at", ["processed_at"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("lab_exports", schema=None) as batch_op:
        batch_op.drop_index("ix_lab_exports_processed_at")
    op.drop_table("lab_exports")
    with op.batch_alter_table("lab_results", schema=None) as batch_op:
        batch_op.drop_index("ix_lab_results_batch_known")
        batch_op.drop_index("ix_lab_results_tested_at")
        batch_op.drop_index("ix_lab_results_batch_id")
    op.drop_table("lab_results")
