"""tenant quotas and usage

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-26

A tenant's quota limits live with the tenant, as JSON keyed by quota name (``{"maxModels": 10}``);
a quota that is absent is unlimited. Usage is counted from the rows themselves, never stored.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

Json = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("tenants", sa.Column("quotas", Json, nullable=False, server_default=sa.text("'{}'")))


def downgrade() -> None:
    with op.batch_alter_table("tenants") as batch:  # SQLite rebuilds the table to drop a column
        batch.drop_column("quotas")
