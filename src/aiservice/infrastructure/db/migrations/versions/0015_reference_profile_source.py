"""a reference profile's source names its dataset

Revision ID: 0015
Revises: 0014
Create Date: 2026-12-07

``reference_profiles.source`` grows from 16 to 140 characters: besides ``rows`` and ``training`` it is
``dataset:<name>`` for a profile sampled from an uploaded dataset (names are up to 128 characters).
Experiments on a deployment needed no column: ``experiments.deployment`` (0012) holds its name.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0015"
down_revision = "0014"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("reference_profiles") as batch:
        batch.alter_column(
            "source", existing_type=sa.String(16), type_=sa.String(140), existing_nullable=False
        )


def downgrade() -> None:
    with op.batch_alter_table("reference_profiles") as batch:
        batch.alter_column(
            "source", existing_type=sa.String(140), type_=sa.String(16), existing_nullable=False
        )
