"""monitoring actions

Revision ID: 0014
Revises: 0013
Create Date: 2026-12-07

``monitoring_actions``: each automatic step a monitoring policy took (alert, retrain, compare, promote,
rollback) with its reason, newest first per model by ``(created_at, id)``; ``reference`` (a training job,
an experiment, a deployment) is indexed so that a job's end finds the retraining that queued it.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

Json = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")

revision = "0014"
down_revision = "0013"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "monitoring_actions",
        sa.Column("tenant_id", sa.String(63), primary_key=True),
        sa.Column("id", sa.String(32), primary_key=True),
        sa.Column("model_id", sa.String(36), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("action", sa.String(16), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("trigger", sa.String(16), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("reference", sa.String(200), nullable=True),
        sa.Column("details", Json, nullable=False),
        sa.Column("created_by", sa.String(200), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index(
        "ix_monitoring_actions_model_created",
        "monitoring_actions",
        ["tenant_id", "model_id", "created_at", "id"],
    )
    op.create_index("ix_monitoring_actions_reference", "monitoring_actions", ["tenant_id", "reference"])


def downgrade() -> None:
    op.drop_index("ix_monitoring_actions_reference", table_name="monitoring_actions")
    op.drop_index("ix_monitoring_actions_model_created", table_name="monitoring_actions")
    op.drop_table("monitoring_actions")
