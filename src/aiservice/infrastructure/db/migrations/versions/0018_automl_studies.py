"""automl studies

Revision ID: 0018
Revises: 0017
Create Date: 2026-12-07

``automl_studies``: one AutoML study per row (ADR 28): its request, its finished trials as a JSON list
(appended as each trial ends), its result (best trial, held-out figures, baseline) and the version its
best trial was registered as. The Optuna study itself lives in memory in the runner; nothing of
Optuna's own schema is created.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0018"
down_revision = "0017"
branch_labels = None
depends_on = None

Json = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")


def upgrade() -> None:
    op.create_table(
        "automl_studies",
        sa.Column("tenant_id", sa.String(63), primary_key=True),
        sa.Column("id", sa.String(36), primary_key=True),
        sa.Column("model_id", sa.String(36), nullable=False),
        sa.Column("status", sa.String(20), nullable=False),
        sa.Column("request", Json, nullable=False),
        sa.Column("trials", Json, nullable=False),
        sa.Column("result", Json, nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("version", sa.Integer(), nullable=True),
        sa.Column("created_by", sa.String(200), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index(
        "ix_automl_studies_model_created", "automl_studies", ["tenant_id", "model_id", "created_at"]
    )


def downgrade() -> None:
    op.drop_index("ix_automl_studies_model_created", table_name="automl_studies")
    op.drop_table("automl_studies")
