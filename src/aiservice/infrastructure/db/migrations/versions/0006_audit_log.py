"""hash-chained audit log

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-26

One chain per tenant (``seq`` 1, 2, ... with ``prev_hash`` and ``hash``), and each tenant's chain head,
the row writers lock so two writers never fork a chain. Rows are append-only where the database can
enforce it: on PostgreSQL a trigger refuses UPDATE, and DELETE or TRUNCATE unless the transaction
first ran ``SET LOCAL aiservice.audit_erase = 'on'`` (a deliberate operator action, e.g. retention);
on SQLite a trigger refuses UPDATE. Either way the hash chain shows any edit or deletion.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

Json = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

POSTGRES_GUARD = """
CREATE FUNCTION audit_log_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'UPDATE' THEN
        RAISE EXCEPTION 'audit_log is append-only: its rows cannot be updated';
    END IF;
    IF coalesce(current_setting('aiservice.audit_erase', true), '') <> 'on' THEN
        RAISE EXCEPTION 'audit_log is append-only: run SET LOCAL aiservice.audit_erase = ''on'' to erase';
    END IF;
    RETURN OLD;
END
$$;
CREATE TRIGGER audit_log_append_only BEFORE UPDATE OR DELETE ON audit_log
    FOR EACH ROW EXECUTE FUNCTION audit_log_append_only();
CREATE TRIGGER audit_log_no_truncate BEFORE TRUNCATE ON audit_log
    FOR EACH STATEMENT EXECUTE FUNCTION audit_log_append_only();
"""

SQLITE_GUARD = """
CREATE TRIGGER audit_log_append_only BEFORE UPDATE ON audit_log
BEGIN
    SELECT RAISE(ABORT, 'audit_log is append-only: its rows cannot be updated');
END
"""


def upgrade() -> None:
    op.create_table(
        "audit_log",
        sa.Column("tenant_id", sa.String(63), primary_key=True),
        sa.Column("seq", sa.BigInteger(), primary_key=True, autoincrement=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("action", sa.String(100), nullable=False),
        sa.Column("outcome", sa.String(10), nullable=False),
        sa.Column("subject", sa.String(200), nullable=True),
        sa.Column("roles", Json, nullable=False),
        sa.Column("resource_type", sa.String(50), nullable=True),
        sa.Column("resource_id", sa.String(200), nullable=True),
        sa.Column("resource_name", sa.String(400), nullable=True),
        sa.Column("reason", sa.String(100), nullable=True),
        sa.Column("client_ip", sa.String(64), nullable=True),
        sa.Column("request_id", sa.String(128), nullable=True),
        sa.Column("changes", sa.Text(), nullable=True),
        sa.Column("prev_hash", sa.String(64), nullable=False),
        sa.Column("hash", sa.String(64), nullable=False),
    )
    op.create_index("ix_audit_log_tenant_at", "audit_log", ["tenant_id", "at"])
    op.create_table(
        "audit_chain_heads",
        sa.Column("tenant_id", sa.String(63), primary_key=True),
        sa.Column("seq", sa.BigInteger(), nullable=False),
        sa.Column("hash", sa.String(64), nullable=False),
    )
    if op.get_bind().dialect.name == "postgresql":
        op.execute(POSTGRES_GUARD)
    else:
        op.execute(SQLITE_GUARD)


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("DROP TRIGGER IF EXISTS audit_log_no_truncate ON audit_log")
        op.execute("DROP TRIGGER IF EXISTS audit_log_append_only ON audit_log")
        op.execute("DROP FUNCTION IF EXISTS audit_log_append_only()")
    else:
        op.execute("DROP TRIGGER IF EXISTS audit_log_append_only")
    op.drop_table("audit_chain_heads")
    op.drop_index("ix_audit_log_tenant_at", "audit_log")
    op.drop_table("audit_log")
