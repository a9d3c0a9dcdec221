"""outbox relay lease and processed event ids

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-26

``outbox_lease``: the relay that holds the row (holder, expires_at) publishes the outbox, so several
replicas do not publish the same events twice; taken and renewed with a conditional UPDATE, which works
alike on SQLite and PostgreSQL. ``processed_events``: the ids of the events each consumer has handled,
so an event a broker delivers again is handled once.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "outbox_lease",
        sa.Column("name", sa.String(50), primary_key=True),
        sa.Column("holder", sa.String(200), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_table(
        "processed_events",
        sa.Column("consumer", sa.String(200), primary_key=True),
        sa.Column("event_id", sa.String(36), primary_key=True),
        sa.Column("event_type", sa.String(100), nullable=False),
        sa.Column("processed_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index("ix_processed_events_processed_at", "processed_events", ["processed_at"])


def downgrade() -> None:
    op.drop_index("ix_processed_events_processed_at", "processed_events")
    op.drop_table("processed_events")
    op.drop_table("outbox_lease")
