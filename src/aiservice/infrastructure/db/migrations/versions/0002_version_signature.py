"""version signature and serving form

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-26

Each version records the signature its runtime reported when the upload was inspected, and which
form serves it (native or compiled ONNX) and why.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

JSON = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("model_versions", sa.Column("signature", JSON, nullable=True))
    op.add_column(
        "model_versions", sa.Column("serving", JSON, nullable=False, server_default=sa.text("'{}'"))
    )


def downgrade() -> None:
    with op.batch_alter_table("model_versions") as batch:
        batch.drop_column("serving")
        batch.drop_column("signature")
