"""a deployment's last reported load

Revision ID: 0017
Revises: 0016
Create Date: 2026-12-07

``deployments.load``: what the serving revision's replicas last reported (requests in flight, CPU,
p95 latency), written by the reconcile loop at most every 10 s, so the API and the dashboard can show
a deployment's latency.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0017"
down_revision = "0016"
branch_labels = None
depends_on = None

Json = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")


def upgrade() -> None:
    with op.batch_alter_table("deployments") as batch:
        batch.add_column(sa.Column("load", Json, nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("deployments") as batch:
        batch.drop_column("load")
