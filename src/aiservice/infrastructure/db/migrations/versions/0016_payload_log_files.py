"""payload logs to Parquet files

Revision ID: 0016
Revises: 0015
Create Date: 2026-12-07

``payload_log_policies.sink``: where a model's logged inputs and outputs go, ``database`` (the default,
what every existing policy keeps) or ``parquet``. ``prediction_logs.file_key`` and ``file_row``: with
the Parquet sink a row keeps everything but the inputs and outputs, which are row ``file_row`` of the
artifact store object ``file_key``. ``payload_log_files``: one row per such file (its digest, row count
and time span), kept until its object is deleted.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op


def UtcDateTime() -> sa.DateTime:
    return sa.DateTime(timezone=True)


revision = "0016"
down_revision = "0015"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("payload_log_policies") as batch:
        batch.add_column(sa.Column("sink", sa.String(16), nullable=False, server_default="database"))
    with op.batch_alter_table("prediction_logs") as batch:
        batch.add_column(sa.Column("file_key", sa.String(300), nullable=True))
        batch.add_column(sa.Column("file_row", sa.Integer(), nullable=True))
    op.create_index("ix_prediction_logs_file", "prediction_logs", ["tenant_id", "file_key"])
    op.create_table(
        "payload_log_files",
        sa.Column("tenant_id", sa.String(63), primary_key=True),
        sa.Column("key", sa.String(300), primary_key=True),
        sa.Column("model_id", sa.String(36), nullable=False),
        sa.Column("digest", sa.String(128), nullable=False),
        sa.Column("rows", sa.Integer(), nullable=False),
        sa.Column("min_logged_at", UtcDateTime(), nullable=False),
        sa.Column("max_logged_at", UtcDateTime(), nullable=False),
        sa.Column("created_at", UtcDateTime(), nullable=False),
    )
    op.create_index("ix_payload_log_files_model", "payload_log_files", ["tenant_id", "model_id"])


def downgrade() -> None:
    op.drop_index("ix_payload_log_files_model", table_name="payload_log_files")
    op.drop_table("payload_log_files")
    op.drop_index("ix_prediction_logs_file", table_name="prediction_logs")
    with op.batch_alter_table("prediction_logs") as batch:
        batch.drop_column("file_row")
        batch.drop_column("file_key")
    with op.batch_alter_table("payload_log_policies") as batch:
        batch.drop_column("sink")
