"""Leases on in-flight submissions (worker.leases): owner and expiry, renewed by a heartbeat

Revision ID: 0009_leases
Revises: 0008_banks
Create Date: 2026-11-30
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0009_leases"
down_revision: str | None = "0008_banks"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("submissions") as batch:
        batch.add_column(sa.Column("lease_owner", sa.String(length=120), nullable=True))
        batch.add_column(sa.Column("lease_expires_at", sa.DateTime(timezone=True), nullable=True))
        batch.create_index("ix_submissions_lease_expires", ["lease_expires_at"])


def downgrade() -> None:
    with op.batch_alter_table("submissions") as batch:
        batch.drop_index("ix_submissions_lease_expires")
        batch.drop_column("lease_expires_at")
        batch.drop_column("lease_owner")
