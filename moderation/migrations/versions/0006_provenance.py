"""C2PA provenance: the verdict's provenance signal and decision reason; a tenant's policy

Revision ID: 0006_provenance
Revises: 0005
Create Date: 2026-11-30
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006_provenance"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("verdicts") as batch:
        batch.add_column(sa.Column("decision_reason", sa.String(length=60), nullable=True))
        batch.add_column(sa.Column("provenance", sa.JSON(), nullable=True))
    with op.batch_alter_table("tenants") as batch:
        batch.add_column(sa.Column("provenance_policy", sa.String(length=20), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("tenants") as batch:
        batch.drop_column("provenance_policy")
    with op.batch_alter_table("verdicts") as batch:
        batch.drop_column("provenance")
        batch.drop_column("decision_reason")
