"""the AutoML study a training job is a trial of

Revision ID: 0019
Revises: 0018
Create Date: 2026-12-07

``training_jobs.automl_study_id``: set on the jobs that run an AutoML study's trials (ADR 28), so jobs
can be listed as training or trial jobs, or as one study's trials, and a study's unfinished trials are
found by an index rather than by reading every job's configuration. Existing jobs are training jobs.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0019"
down_revision = "0018"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("training_jobs") as batch:
        batch.add_column(sa.Column("automl_study_id", sa.String(36), nullable=True))
        batch.create_index("ix_training_jobs_tenant_study", ["tenant_id", "automl_study_id"])


def downgrade() -> None:
    with op.batch_alter_table("training_jobs") as batch:
        batch.drop_index("ix_training_jobs_tenant_study")
        batch.drop_column("automl_study_id")
