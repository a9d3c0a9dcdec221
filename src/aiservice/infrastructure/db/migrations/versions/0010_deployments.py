"""deployments

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-06

``deployments``: a tenant's named endpoints, the desired state the deployers reconcile (scaling,
resources, the asked-for, serving and previous revisions) and what they last observed (status,
reason, ready replicas), with the latest events. One live deployment per name and tenant.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

Json = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")


def UtcDateTime() -> sa.DateTime:
    return sa.DateTime(timezone=True)


revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "deployments",
        sa.Column("tenant_id", sa.String(63), sa.ForeignKey("tenants.tenant_id"), primary_key=True),
        sa.Column("id", sa.String(36), primary_key=True),
        sa.Column("name", sa.String(63), nullable=False),
        sa.Column("model_id", sa.String(36), nullable=False),
        sa.Column("environment", sa.String(20), nullable=False),
        sa.Column("target", sa.String(20), nullable=False),
        sa.Column("status", sa.String(20), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("scaling", Json, nullable=False),
        sa.Column("resources", Json, nullable=False),
        sa.Column("revision", Json, nullable=False),
        sa.Column("serving", Json, nullable=True),
        sa.Column("previous", Json, nullable=True),
        sa.Column("replicas_desired", sa.Integer(), nullable=False),
        sa.Column("replicas_ready", sa.Integer(), nullable=False),
        sa.Column("history", Json, nullable=False),
        sa.Column("endpoints", Json, nullable=False),
        sa.Column("created_by", sa.String(200), nullable=True),
        sa.Column("created_at", UtcDateTime(), nullable=False),
        sa.Column("updated_at", UtcDateTime(), nullable=False),
        sa.Column("deleted_at", UtcDateTime(), nullable=True),
        sa.ForeignKeyConstraint(
            ["tenant_id", "model_id"], ["models.tenant_id", "models.id"], name="fk_deployments_model"
        ),
    )
    op.create_index(
        "uq_deployments_live_name",
        "deployments",
        ["tenant_id", "name"],
        unique=True,
        postgresql_where=sa.text("deleted_at IS NULL"),
        sqlite_where=sa.text("deleted_at IS NULL"),
    )
    op.create_index("ix_deployments_tenant_created", "deployments", ["tenant_id", "created_at", "id"])


def downgrade() -> None:
    op.drop_index("ix_deployments_tenant_created", table_name="deployments")
    op.drop_index("uq_deployments_live_name", table_name="deployments")
    op.drop_table("deployments")
