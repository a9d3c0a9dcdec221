"""experiments

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-07

Experiments: their arms, state and observations.

``experiments``: one row per experiment (arms and plans as JSON); at most one running per model.
``experiment_observations``: one row per routed prediction or shadow copy, by request id (the join
key of ``prediction_feedback``), written in batches by the observation recorder.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

Json = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None


def UtcDateTime() -> sa.DateTime:
    return sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "experiments",
        sa.Column("tenant_id", sa.String(63), sa.ForeignKey("tenants.tenant_id"), primary_key=True),
        sa.Column("id", sa.String(36), primary_key=True),
        sa.Column("name", sa.String(128), nullable=False),
        sa.Column("model_id", sa.String(36), nullable=False),
        sa.Column("deployment", sa.String(63), nullable=True),
        sa.Column("mode", sa.String(16), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("arms", Json, nullable=False),
        sa.Column("champion", sa.String(64), nullable=False),
        sa.Column("routing_key", Json, nullable=True),
        sa.Column("confidence", sa.Float(), nullable=False),
        sa.Column("min_detectable_effect", sa.Float(), nullable=False),
        sa.Column("auto_promote", sa.Boolean(), nullable=False),
        sa.Column("canary", Json, nullable=True),
        sa.Column("bandit", Json, nullable=True),
        sa.Column("canary_step", sa.Integer(), nullable=False),
        sa.Column("step_started_at", UtcDateTime(), nullable=True),
        sa.Column("allocation", Json, nullable=False),
        sa.Column("winner", sa.String(64), nullable=True),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("created_by", sa.String(200), nullable=True),
        sa.Column("created_at", UtcDateTime(), nullable=False),
        sa.Column("updated_at", UtcDateTime(), nullable=False),
        sa.Column("started_at", UtcDateTime(), nullable=True),
        sa.Column("ended_at", UtcDateTime(), nullable=True),
        sa.ForeignKeyConstraint(
            ["tenant_id", "model_id"], ["models.tenant_id", "models.id"], name="fk_experiments_model"
        ),
    )
    op.create_index(
        "uq_experiments_running_model",
        "experiments",
        ["tenant_id", "model_id"],
        unique=True,
        postgresql_where=sa.text("status = 'running'"),
        sqlite_where=sa.text("status = 'running'"),
    )
    op.create_index("ix_experiments_tenant_created", "experiments", ["tenant_id", "created_at", "id"])
    op.create_index("ix_experiments_status", "experiments", ["status"])
    op.create_table(
        "experiment_observations",
        sa.Column("tenant_id", sa.String(63), primary_key=True),
        sa.Column("id", sa.String(32), primary_key=True),
        sa.Column("experiment_id", sa.String(36), nullable=False),
        sa.Column("arm", sa.String(64), nullable=False),
        sa.Column("request_id", sa.String(160), nullable=False),
        sa.Column("latency_ms", sa.Float(), nullable=False),
        sa.Column("error", sa.Boolean(), nullable=False),
        sa.Column("prediction", Json, nullable=True),
        sa.Column("shadow", sa.Boolean(), nullable=False),
        sa.Column("created_at", UtcDateTime(), nullable=False),
    )
    op.create_index(
        "ix_experiment_observations_experiment",
        "experiment_observations",
        ["tenant_id", "experiment_id", "created_at"],
    )


def downgrade() -> None:
    op.drop_index("ix_experiment_observations_experiment", table_name="experiment_observations")
    op.drop_table("experiment_observations")
    op.drop_index("ix_experiments_status", table_name="experiments")
    op.drop_index("ix_experiments_tenant_created", table_name="experiments")
    op.drop_index("uq_experiments_running_model", table_name="experiments")
    op.drop_table("experiments")
