"""drift monitoring

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-07

``reference_profiles``: a version's reference profile (what its training or reference data looked like).
``monitoring_policies``: a model's drift thresholds, schedule, window and actions.
``drift_reports``: every drift check computed, with its per-feature scores.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

Json = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")


def UtcDateTime() -> sa.DateTime:
    return sa.DateTime(timezone=True)


revision = "0013"
down_revision = "0012"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "reference_profiles",
        sa.Column("tenant_id", sa.String(63), primary_key=True),
        sa.Column("model_id", sa.String(36), primary_key=True),
        sa.Column("version", sa.Integer(), primary_key=True),
        sa.Column("profile", Json, nullable=False),
        sa.Column("source", sa.String(16), nullable=False),
        sa.Column("created_by", sa.String(200), nullable=True),
        sa.Column("created_at", UtcDateTime(), nullable=False),
    )
    op.create_table(
        "monitoring_policies",
        sa.Column("tenant_id", sa.String(63), primary_key=True),
        sa.Column("model_id", sa.String(36), primary_key=True),
        sa.Column("policy", Json, nullable=False),
        sa.Column("schedule_minutes", sa.Integer(), nullable=True),
        sa.Column("last_run_at", UtcDateTime(), nullable=True),
        sa.Column("updated_by", sa.String(200), nullable=True),
        sa.Column("updated_at", UtcDateTime(), nullable=False),
    )
    op.create_table(
        "drift_reports",
        sa.Column("tenant_id", sa.String(63), primary_key=True),
        sa.Column("id", sa.String(32), primary_key=True),
        sa.Column("model_id", sa.String(36), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("verdict", sa.String(16), nullable=False),
        sa.Column("score", sa.Float(), nullable=True),
        sa.Column("trigger", sa.String(16), nullable=False),
        sa.Column("window_since", UtcDateTime(), nullable=True),
        sa.Column("window_until", UtcDateTime(), nullable=True),
        sa.Column("report", Json, nullable=False),
        sa.Column("created_at", UtcDateTime(), nullable=False),
    )
    op.create_index(
        "ix_drift_reports_model_created", "drift_reports", ["tenant_id", "model_id", "created_at", "id"]
    )


def downgrade() -> None:
    op.drop_index("ix_drift_reports_model_created", table_name="drift_reports")
    op.drop_table("drift_reports")
    op.drop_table("monitoring_policies")
    op.drop_table("reference_profiles")
