"""training jobs, their event streams, and version lineage

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-26

Jobs are queued in the database so they survive a restart; each job's progress and status
changes are numbered per job, so a client's event stream resumes where it left off.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

Json = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")


def UtcDateTime() -> sa.DateTime:
    return sa.DateTime(timezone=True)


revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column(
        "model_versions", sa.Column("lineage", Json, nullable=False, server_default=sa.text("'{}'"))
    )
    op.add_column(
        "model_versions", sa.Column("configuration", Json, nullable=False, server_default=sa.text("'{}'"))
    )
    op.create_table(
        "training_jobs",
        sa.Column("tenant_id", sa.String(63), sa.ForeignKey("tenants.tenant_id"), primary_key=True),
        sa.Column("id", sa.String(36), primary_key=True),
        sa.Column("model_id", sa.String(36), nullable=False),
        sa.Column("status", sa.String(20), nullable=False),
        sa.Column("training", Json, nullable=False),
        sa.Column("dataset", Json, nullable=False),
        sa.Column("resources", Json, nullable=False),
        sa.Column("created_by", sa.String(200), nullable=True),
        sa.Column("created_at", UtcDateTime(), nullable=False),
        sa.Column("started_at", UtcDateTime(), nullable=True),
        sa.Column("finished_at", UtcDateTime(), nullable=True),
        sa.Column("updated_at", UtcDateTime(), nullable=True),
        sa.Column("progress", sa.Float(), nullable=False),
        sa.Column("epoch", sa.Integer(), nullable=True),
        sa.Column("epochs", sa.Integer(), nullable=True),
        sa.Column("step", sa.Integer(), nullable=True),
        sa.Column("steps", sa.Integer(), nullable=True),
        sa.Column("metrics", Json, nullable=False),
        sa.Column("history", Json, nullable=False),
        sa.Column("failure", Json, nullable=True),
        sa.Column("version", sa.Integer(), nullable=True),
        sa.Column("device", sa.String(40), nullable=True),
        sa.Column("dataset_fingerprint", Json, nullable=False),
        sa.Column("runner_id", sa.String(100), nullable=True),
        sa.Column("heartbeat_at", UtcDateTime(), nullable=True),
        sa.Column("last_event_seq", sa.Integer(), nullable=False, server_default="0"),
        sa.ForeignKeyConstraint(
            ["tenant_id", "model_id"], ["models.tenant_id", "models.id"], name="fk_training_jobs_model"
        ),
    )
    op.create_index("ix_training_jobs_tenant_created", "training_jobs", ["tenant_id", "created_at", "id"])
    op.create_index("ix_training_jobs_status_created", "training_jobs", ["status", "created_at"])
    op.create_table(
        "training_job_events",
        sa.Column("tenant_id", sa.String(63), primary_key=True),
        sa.Column("job_id", sa.String(36), primary_key=True),
        sa.Column("seq", sa.Integer(), primary_key=True),
        sa.Column("type", sa.String(20), nullable=False),
        sa.Column("data", Json, nullable=False),
        sa.Column("created_at", UtcDateTime(), nullable=False),
        sa.ForeignKeyConstraint(
            ["tenant_id", "job_id"],
            ["training_jobs.tenant_id", "training_jobs.id"],
            name="fk_training_job_events_job",
            ondelete="CASCADE",
        ),
    )


def downgrade() -> None:
    op.drop_table("training_job_events")
    op.drop_index("ix_training_jobs_status_created", "training_jobs")
    op.drop_index("ix_training_jobs_tenant_created", "training_jobs")
    op.drop_table("training_jobs")
    with op.batch_alter_table("model_versions") as batch:
        batch.drop_column("configuration")
        batch.drop_column("lineage")
