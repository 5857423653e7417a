"""Several models: each verdict's per-model results and ensemble; a tenant's enabled models

Revision ID: 0010_ensemble
Revises: 0009_leases
Create Date: 2026-11-30
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0010_ensemble"
down_revision: str | None = "0009_leases"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("verdicts") as batch:
        batch.add_column(sa.Column("models", sa.JSON(), nullable=True))
        batch.add_column(sa.Column("ensemble", sa.JSON(), nullable=True))
    with op.batch_alter_table("tenants") as batch:
        batch.add_column(sa.Column("models", sa.JSON(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("tenants") as batch:
        batch.drop_column("models")
    with op.batch_alter_table("verdicts") as batch:
        batch.drop_column("ensemble")
        batch.drop_column("models")
