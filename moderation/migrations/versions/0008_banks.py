"""Known-media banks: banks, entries, submissions' perceptual hashes, per-tenant bank policy, the
bank generation counter; the verdict's signals (its decision_reason came with 0006)

Revision ID: 0008_banks
Revises: 0007_explanation
Create Date: 2026-11-30
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0008_banks"
down_revision: str | None = "0007_explanation"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("verdicts") as batch:
        batch.add_column(sa.Column("signals", sa.JSON(), nullable=True))
    op.create_table(
        "bank_state",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("generation", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_bank_state"),
    )
    op.create_table(
        "banks",
        sa.Column("id", sa.String(40), nullable=False),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("verdict", sa.String(10), nullable=False),
        sa.Column("tenant_id", sa.String(40), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["tenant_id"], ["tenants.id"], name="fk_banks_tenant_id_tenants", ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name="pk_banks"),
        sa.UniqueConstraint("name", name="uq_banks_name"),
    )
    op.create_index("ix_banks_tenant_id", "banks", ["tenant_id"])
    op.create_table(
        "bank_entries",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("bank_id", sa.String(40), nullable=False),
        sa.Column("signal_type", sa.String(10), nullable=False),
        sa.Column("pdq", sa.String(64), nullable=False),
        sa.Column("quality", sa.Integer(), nullable=True),
        sa.Column("frames", sa.JSON(), nullable=True),
        sa.Column("source", sa.String(20), nullable=False),
        sa.Column("submission_id", sa.String(40), nullable=True),
        sa.Column("review_id", sa.String(40), nullable=True),
        sa.Column("added_by", sa.String(200), nullable=True),
        sa.Column("import_source", sa.Text(), nullable=True),
        sa.Column("external_id", sa.String(200), nullable=True),
        sa.Column("note", sa.Text(), nullable=True),
        sa.Column("added_generation", sa.Integer(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("removed_generation", sa.Integer(), nullable=True),
        sa.Column("removed_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("removed_by", sa.String(200), nullable=True),
        sa.Column("removed_reason", sa.Text(), nullable=True),
        sa.ForeignKeyConstraint(
            ["bank_id"], ["banks.id"], name="fk_bank_entries_bank_id_banks", ondelete="CASCADE"
        ),
        sa.ForeignKeyConstraint(
            ["submission_id"],
            ["submissions.id"],
            name="fk_bank_entries_submission_id_submissions",
            ondelete="SET NULL",
        ),
        sa.PrimaryKeyConstraint("id", name="pk_bank_entries"),
    )
    op.create_index("ix_bank_entries_bank_created", "bank_entries", ["bank_id", "created_at"])
    op.create_index("ix_bank_entries_added_generation", "bank_entries", ["added_generation"])
    op.create_index("ix_bank_entries_removed_generation", "bank_entries", ["removed_generation"])
    op.create_index("ix_bank_entries_submission_id", "bank_entries", ["submission_id"])
    op.create_table(
        "media_hashes",
        sa.Column("submission_id", sa.String(40), nullable=False),
        sa.Column("signal_type", sa.String(10), nullable=False),
        sa.Column("pdq", sa.String(64), nullable=False),
        sa.Column("quality", sa.Integer(), nullable=False),
        sa.Column("frames", sa.JSON(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["submission_id"],
            ["submissions.id"],
            name="fk_media_hashes_submission_id_submissions",
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("submission_id", name="pk_media_hashes"),
    )
    op.create_index("ix_media_hashes_pdq", "media_hashes", ["pdq"])
    op.create_table(
        "bank_policies",
        sa.Column("tenant_id", sa.String(40), nullable=False),
        sa.Column("on_fake", sa.String(10), nullable=False),
        sa.Column("on_real", sa.String(10), nullable=False),
        sa.Column("auto_add", sa.Boolean(), nullable=False),
        sa.ForeignKeyConstraint(
            ["tenant_id"],
            ["tenants.id"],
            name="fk_bank_policies_tenant_id_tenants",
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("tenant_id", name="pk_bank_policies"),
    )
    op.bulk_insert(
        sa.table("bank_state", sa.column("id", sa.Integer), sa.column("generation", sa.Integer)),
        [{"id": 1, "generation": 0}],
    )


def downgrade() -> None:
    op.drop_table("bank_policies")
    op.drop_index("ix_media_hashes_pdq", table_name="media_hashes")
    op.drop_table("media_hashes")
    for name in (
        "ix_bank_entries_submission_id",
        "ix_bank_entries_removed_generation",
        "ix_bank_entries_added_generation",
        "ix_bank_entries_bank_created",
    ):
        op.drop_index(name, table_name="bank_entries")
    op.drop_table("bank_entries")
    op.drop_index("ix_banks_tenant_id", table_name="banks")
    op.drop_table("banks")
    op.drop_table("bank_state")
    with op.batch_alter_table("verdicts") as batch:
        batch.drop_column("signals")
