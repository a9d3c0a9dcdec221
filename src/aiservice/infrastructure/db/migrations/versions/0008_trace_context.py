"""W3C trace context on outbox events and training jobs

Revision ID: 0008
Revises: 0007
Create Date: 2026-11-26

``outbox.traceparent``: the ``traceparent`` of the request that committed the event, carried into the
CloudEvent (its ``traceparent`` extension) so consumers join the producer's trace.
``training_jobs.traceparent``: the submitting request's, so the job's spans, run later by a worker,
join the trace of the request that asked for it.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("outbox") as batch:
        batch.add_column(sa.Column("traceparent", sa.String(55), nullable=True))
    with op.batch_alter_table("training_jobs") as batch:
        batch.add_column(sa.Column("traceparent", sa.String(55), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("training_jobs") as batch:
        batch.drop_column("traceparent")
    with op.batch_alter_table("outbox") as batch:
        batch.drop_column("traceparent")
