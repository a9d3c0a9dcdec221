"""payload logs

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-07

``payload_log_policies``: whether a model's predictions are logged, at which sample rate, for how long.
``prediction_logs``: the sampled predictions, one row per answered input, by request id.
``prediction_feedback``: the latest feedback (true label and/or reward) per logged request id.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

Json = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")


def UtcDateTime() -> sa.DateTime:
    return sa.DateTime(timezone=True)


revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "payload_log_policies",
        sa.Column("tenant_id", sa.String(63), primary_key=True),
        sa.Column("model_id", sa.String(36), primary_key=True),
        sa.Column("enabled", sa.Boolean(), nullable=False),
        sa.Column("sample_rate", sa.Float(), nullable=False),
        sa.Column("retention_days", sa.Integer(), nullable=False),
        sa.Column("updated_by", sa.String(200), nullable=True),
        sa.Column("updated_at", UtcDateTime(), nullable=False),
    )
    op.create_table(
        "prediction_logs",
        sa.Column("tenant_id", sa.String(63), primary_key=True),
        sa.Column("id", sa.String(32), primary_key=True),
        sa.Column("request_id", sa.String(160), nullable=False),
        sa.Column("model_id", sa.String(36), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("deployment", sa.String(63), nullable=True),
        sa.Column("experiment_id", sa.String(36), nullable=True),
        sa.Column("arm", sa.String(63), nullable=True),
        sa.Column("inputs", Json, nullable=True),
        sa.Column("outputs", Json, nullable=True),
        sa.Column("latency_ms", sa.Float(), nullable=False),
        sa.Column("created_at", UtcDateTime(), nullable=False),
    )
    op.create_index(
        "ix_prediction_logs_model_created", "prediction_logs", ["tenant_id", "model_id", "created_at", "id"]
    )
    op.create_index("ix_prediction_logs_request", "prediction_logs", ["tenant_id", "request_id"])
    op.create_table(
        "prediction_feedback",
        sa.Column("tenant_id", sa.String(63), primary_key=True),
        sa.Column("request_id", sa.String(160), primary_key=True),
        sa.Column("model_id", sa.String(36), nullable=False),
        sa.Column("label", Json, nullable=True),
        sa.Column("has_label", sa.Boolean(), nullable=False),
        sa.Column("reward", sa.Float(), nullable=True),
        sa.Column("created_by", sa.String(200), nullable=True),
        sa.Column("created_at", UtcDateTime(), nullable=False),
    )
    op.create_index("ix_prediction_feedback_model", "prediction_feedback", ["tenant_id", "model_id"])


def downgrade() -> None:
    op.drop_index("ix_prediction_feedback_model", table_name="prediction_feedback")
    op.drop_table("prediction_feedback")
    op.drop_index("ix_prediction_logs_request", table_name="prediction_logs")
    op.drop_index("ix_prediction_logs_model_created", table_name="prediction_logs")
    op.drop_table("prediction_logs")
    op.drop_table("payload_log_policies")
