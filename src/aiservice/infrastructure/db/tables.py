"""The relational schema. Alembic migrations create it; this module is what queries are written against.

``tenant_id`` is on every table and leads every unique index. JSON becomes JSONB on PostgreSQL.
"""

from __future__ import annotations

from datetime import UTC as _UTC
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.types import TypeDecorator

metadata = sa.MetaData(
    naming_convention={
        "ix": "ix_%(column_0_label)s",
        "uq": "uq_%(table_name)s_%(column_0_name)s",
        "ck": "ck_%(table_name)s_%(constraint_name)s",
        "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
        "pk": "pk_%(table_name)s",
    }
)

Json = sa.JSON().with_variant(JSONB(), "postgresql")


class UtcDateTime(TypeDecorator[datetime]):
    """Timezone-aware UTC in and out, on SQLite (which stores naive text) as on PostgreSQL."""

    impl = sa.DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: sa.Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetimes are not stored; use UTC")
        return value.astimezone(_UTC)

    def process_result_value(self, value: datetime | None, dialect: sa.Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=_UTC) if value.tzinfo is None else value.astimezone(_UTC)


tenants = sa.Table(
    "tenants",
    metadata,
    sa.Column("tenant_id", sa.String(63), primary_key=True),
    sa.Column("name", sa.String(200), nullable=False),
    sa.Column("status", sa.String(20), nullable=False),
    sa.Column("settings", Json, nullable=False),
    sa.Column("created_at", UtcDateTime(), nullable=False),
    # Limits by quota name (migration 0005); an absent quota is unlimited.
    sa.Column("quotas", Json, nullable=False, server_default=sa.text("'{}'")),
)

models = sa.Table(
    "models",
    metadata,
    sa.Column("tenant_id", sa.String(63), sa.ForeignKey("tenants.tenant_id"), primary_key=True),
    sa.Column("id", sa.String(36), primary_key=True),
    sa.Column("name", sa.String(128), nullable=False),
    sa.Column("description", sa.Text(), nullable=False),
    sa.Column("framework", sa.String(20), nullable=False),
    sa.Column("category", sa.String(100), nullable=True),
    sa.Column("configuration", Json, nullable=False),
    sa.Column("input_schema", Json, nullable=False),
    sa.Column("output_schema", Json, nullable=False),
    sa.Column("tags", Json, nullable=False),
    sa.Column("latest_version", sa.Integer(), nullable=True),
    sa.Column("created_by", sa.String(200), nullable=True),
    sa.Column("created_at", UtcDateTime(), nullable=False),
    sa.Column("updated_at", UtcDateTime(), nullable=False),
    sa.Column("deleted_at", UtcDateTime(), nullable=True),
    # A deleted model frees its name, so uniqueness covers live rows only.
    sa.Index(
        "uq_models_tenant_name_live",
        "tenant_id",
        "name",
        unique=True,
        sqlite_where=sa.text("deleted_at IS NULL"),
        postgresql_where=sa.text("deleted_at IS NULL"),
    ),
    sa.Index("ix_models_tenant_created", "tenant_id", "created_at", "id"),
)

model_versions = sa.Table(
    "model_versions",
    metadata,
    sa.Column("tenant_id", sa.String(63), sa.ForeignKey("tenants.tenant_id"), primary_key=True),
    sa.Column("id", sa.String(36), primary_key=True),
    sa.Column("model_id", sa.String(36), nullable=False),
    sa.Column("version", sa.Integer(), nullable=False),
    sa.Column("description", sa.Text(), nullable=False),
    sa.Column("artifact_key", sa.String(400), nullable=False),
    sa.Column("artifact_digest", sa.String(64), nullable=False),
    sa.Column("artifact_size", sa.BigInteger(), nullable=False),
    sa.Column("artifact_filename", sa.String(255), nullable=False),
    sa.Column("artifact_media_type", sa.String(200), nullable=False),
    sa.Column("metrics", Json, nullable=False),
    sa.Column("params", Json, nullable=False),
    sa.Column("source_run", sa.String(400), nullable=True),
    sa.Column("stage", sa.String(20), nullable=False),
    sa.Column("stage_changed_at", UtcDateTime(), nullable=True),
    sa.Column("created_by", sa.String(200), nullable=True),
    sa.Column("created_at", UtcDateTime(), nullable=False),
    sa.Column("signature", Json, nullable=True),
    sa.Column("serving", Json, nullable=False, server_default=sa.text("'{}'")),
    sa.Column("lineage", Json, nullable=False, server_default=sa.text("'{}'")),
    sa.Column("configuration", Json, nullable=False, server_default=sa.text("'{}'")),
    sa.UniqueConstraint("tenant_id", "model_id", "version", name="uq_model_versions_tenant_model_version"),
    # Composite: a version can only ever belong to a model of its own tenant.
    sa.ForeignKeyConstraint(
        ["tenant_id", "model_id"], ["models.tenant_id", "models.id"], name="fk_model_versions_model"
    ),
    sa.Index(
        "uq_model_versions_one_production",
        "tenant_id",
        "model_id",
        unique=True,
        sqlite_where=sa.text("stage = 'production'"),
        postgresql_where=sa.text("stage = 'production'"),
    ),
)

model_aliases = sa.Table(
    "model_aliases",
    metadata,
    sa.Column("tenant_id", sa.String(63), sa.ForeignKey("tenants.tenant_id"), primary_key=True),
    sa.Column("model_id", sa.String(36), primary_key=True),
    sa.Column("alias", sa.String(64), primary_key=True),
    sa.Column("version", sa.Integer(), nullable=False),
    sa.Column("updated_at", UtcDateTime(), nullable=False),
    sa.ForeignKeyConstraint(
        ["tenant_id", "model_id"], ["models.tenant_id", "models.id"], name="fk_model_aliases_model"
    ),
)

outbox = sa.Table(
    "outbox",
    metadata,
    sa.Column(
        "position", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), primary_key=True, autoincrement=True
    ),
    sa.Column("event_id", sa.String(36), nullable=False),
    sa.Column("tenant_id", sa.String(63), nullable=False),
    sa.Column("event_type", sa.String(100), nullable=False),
    sa.Column("aggregate_type", sa.String(50), nullable=False),
    sa.Column("aggregate_id", sa.String(100), nullable=False),
    sa.Column("occurred_at", UtcDateTime(), nullable=False),
    sa.Column("payload", Json, nullable=False),
    sa.Column("published_at", UtcDateTime(), nullable=True),
    sa.Column("attempts", sa.Integer(), nullable=False, server_default="0"),
    sa.Column("last_error", sa.Text(), nullable=True),
    sa.Column("traceparent", sa.String(55), nullable=True),
    sa.Index("ix_outbox_pending", "published_at", "position"),
    # ``position`` is a delivery sequence, not a business key; the event's identity is per tenant.
    sa.UniqueConstraint("tenant_id", "event_id", name="uq_outbox_tenant_event"),
)

training_jobs = sa.Table(
    "training_jobs",
    metadata,
    sa.Column("tenant_id", sa.String(63), sa.ForeignKey("tenants.tenant_id"), primary_key=True),
    sa.Column("id", sa.String(36), primary_key=True),
    sa.Column("model_id", sa.String(36), nullable=False),
    sa.Column("status", sa.String(20), nullable=False),
    sa.Column("training", Json, nullable=False),
    sa.Column("dataset", Json, nullable=False),
    sa.Column("resources", Json, nullable=False),
    sa.Column("created_by", sa.String(200), nullable=True),
    sa.Column("created_at", UtcDateTime(), nullable=False),
    sa.Column("started_at", UtcDateTime(), nullable=True),
    sa.Column("finished_at", UtcDateTime(), nullable=True),
    sa.Column("updated_at", UtcDateTime(), nullable=True),
    sa.Column("progress", sa.Float(), nullable=False),
    sa.Column("epoch", sa.Integer(), nullable=True),
    sa.Column("epochs", sa.Integer(), nullable=True),
    sa.Column("step", sa.Integer(), nullable=True),
    sa.Column("steps", sa.Integer(), nullable=True),
    sa.Column("metrics", Json, nullable=False),
    sa.Column("history", Json, nullable=False),
    sa.Column("failure", Json, nullable=True),
    sa.Column("version", sa.Integer(), nullable=True),
    sa.Column("device", sa.String(40), nullable=True),
    sa.Column("dataset_fingerprint", Json, nullable=False),
    sa.Column("runner_id", sa.String(100), nullable=True),
    sa.Column("heartbeat_at", UtcDateTime(), nullable=True),
    sa.Column("last_event_seq", sa.Integer(), nullable=False, server_default="0"),
    sa.Column("traceparent", sa.String(55), nullable=True),
    # The AutoML study whose trial the job runs (migration 0019); NULL for a training job.
    sa.Column("automl_study_id", sa.String(36), nullable=True),
    sa.ForeignKeyConstraint(
        ["tenant_id", "model_id"], ["models.tenant_id", "models.id"], name="fk_training_jobs_model"
    ),
    sa.Index("ix_training_jobs_tenant_created", "tenant_id", "created_at", "id"),
    sa.Index("ix_training_jobs_tenant_study", "tenant_id", "automl_study_id"),
    # The runners' queue: oldest queued first, across tenants.
    sa.Index("ix_training_jobs_status_created", "status", "created_at"),
)

training_job_events = sa.Table(
    "training_job_events",
    metadata,
    sa.Column("tenant_id", sa.String(63), primary_key=True),
    sa.Column("job_id", sa.String(36), primary_key=True),
    sa.Column("seq", sa.Integer(), primary_key=True),
    sa.Column("type", sa.String(20), nullable=False),
    sa.Column("data", Json, nullable=False),
    sa.Column("created_at", UtcDateTime(), nullable=False),
    sa.ForeignKeyConstraint(
        ["tenant_id", "job_id"],
        ["training_jobs.tenant_id", "training_jobs.id"],
        name="fk_training_job_events_job",
        ondelete="CASCADE",
    ),
)

Row = dict[str, Any]

# API keys for machine callers (migration 0004). ``id`` is unique on its own: a presented key names
# only its id, and authentication finds the key (and so its tenant) by that id.
api_keys = sa.Table(
    "api_keys",
    metadata,
    sa.Column("id", sa.String(32), primary_key=True),
    sa.Column("tenant_id", sa.String(63), sa.ForeignKey("tenants.tenant_id"), nullable=False),
    sa.Column("name", sa.String(100), nullable=False),
    sa.Column("roles", Json, nullable=False),
    sa.Column("model_ids", Json, nullable=True),
    sa.Column("secret_hash", sa.String(64), nullable=False),
    sa.Column("created_by", sa.String(200), nullable=False),
    sa.Column("created_at", UtcDateTime(), nullable=False),
    sa.Column("expires_at", UtcDateTime(), nullable=True),
    sa.Column("revoked_at", UtcDateTime(), nullable=True),
    sa.Index("ix_api_keys_tenant_created", "tenant_id", "created_at"),
)

# The audit log (migration 0006): one hash chain per tenant, numbered 1, 2, ... without gaps. Rows are
# never updated (a trigger refuses it). ``changes`` is the diff's canonical JSON text, kept as text so
# it reads back byte for byte as it was hashed. No foreign key: records outlive what they describe.
audit_log = sa.Table(
    "audit_log",
    metadata,
    sa.Column("tenant_id", sa.String(63), primary_key=True),
    sa.Column("seq", sa.BigInteger(), primary_key=True, autoincrement=False),
    sa.Column("at", UtcDateTime(), nullable=False),
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
    sa.Index("ix_audit_log_tenant_at", "tenant_id", "at"),
)

# Each tenant's last record: the row writers lock (SELECT ... FOR UPDATE) so a chain never forks.
audit_chain_heads = sa.Table(
    "audit_chain_heads",
    metadata,
    sa.Column("tenant_id", sa.String(63), primary_key=True),
    sa.Column("seq", sa.BigInteger(), nullable=False),
    sa.Column("hash", sa.String(64), nullable=False),
)

# The outbox relay's lease (migration 0007): one row per lease name; the relay that holds it publishes.
# Taken or renewed with a conditional UPDATE (holder is me, or the lease has expired).
outbox_lease = sa.Table(
    "outbox_lease",
    metadata,
    sa.Column("name", sa.String(50), primary_key=True),
    sa.Column("holder", sa.String(200), nullable=False),
    sa.Column("expires_at", UtcDateTime(), nullable=False),
)

# Events a consumer has handled (migration 0007), so a redelivered event is handled once. Platform-wide:
# keyed by the consumer, not the tenant; pruned after a retention period.
processed_events = sa.Table(
    "processed_events",
    metadata,
    sa.Column("consumer", sa.String(200), primary_key=True),
    sa.Column("event_id", sa.String(36), primary_key=True),
    sa.Column("event_type", sa.String(100), nullable=False),
    sa.Column("processed_at", UtcDateTime(), nullable=False),
    sa.Index("ix_processed_events_processed_at", "processed_at"),
)

# Webhooks (migration 0009): a tenant's subscriptions of a URL to event types. ``secret`` holds the
# signing secret's 32 bytes wrapped (AES key wrap) under the artifact master key that ``secret_key_id``
# names, base64; without encryption at rest (``secret_key_id`` NULL) the secret itself.
webhooks = sa.Table(
    "webhooks",
    metadata,
    sa.Column("tenant_id", sa.String(63), sa.ForeignKey("tenants.tenant_id"), primary_key=True),
    sa.Column("id", sa.String(32), primary_key=True),
    sa.Column("url", sa.String(2048), nullable=False),
    sa.Column("event_types", Json, nullable=False),
    sa.Column("description", sa.String(500), nullable=False),
    sa.Column("active", sa.Boolean(), nullable=False),
    sa.Column("secret", sa.String(200), nullable=False),
    sa.Column("secret_key_id", sa.String(64), nullable=True),
    sa.Column("created_by", sa.String(200), nullable=False),
    sa.Column("created_at", UtcDateTime(), nullable=False),
    sa.Column("updated_at", UtcDateTime(), nullable=False),
    sa.Index("ix_webhooks_tenant_created", "tenant_id", "created_at", "id"),
)

# Each event on its way to each webhook (migration 0009), the delivery log. One row per (webhook, event):
# an event handed over twice is queued once. A worker claims a row (``claimed_until``, ``claim_token``)
# with a conditional UPDATE before it sends, so replicas do not send one attempt twice.
webhook_deliveries = sa.Table(
    "webhook_deliveries",
    metadata,
    sa.Column("tenant_id", sa.String(63), primary_key=True),
    sa.Column("id", sa.String(32), primary_key=True),
    sa.Column("webhook_id", sa.String(32), nullable=False),
    sa.Column("event_id", sa.String(36), nullable=False),
    sa.Column("event_type", sa.String(100), nullable=False),
    sa.Column("body", sa.Text(), nullable=False),
    sa.Column("status", sa.String(20), nullable=False),
    sa.Column("attempts", sa.Integer(), nullable=False, server_default="0"),
    sa.Column("last_status_code", sa.Integer(), nullable=True),
    sa.Column("last_error", sa.Text(), nullable=True),
    sa.Column("duration_ms", sa.Float(), nullable=True),
    sa.Column("created_at", UtcDateTime(), nullable=False),
    sa.Column("next_attempt_at", UtcDateTime(), nullable=True),
    sa.Column("delivered_at", UtcDateTime(), nullable=True),
    sa.Column("claimed_until", UtcDateTime(), nullable=True),
    sa.Column("claim_token", sa.String(32), nullable=True),
    sa.ForeignKeyConstraint(
        ["tenant_id", "webhook_id"],
        ["webhooks.tenant_id", "webhooks.id"],
        name="fk_webhook_deliveries_webhook",
        ondelete="CASCADE",
    ),
    sa.UniqueConstraint("tenant_id", "webhook_id", "event_id", name="uq_webhook_deliveries_webhook_event"),
    sa.Index("ix_webhook_deliveries_log", "tenant_id", "webhook_id", "created_at", "id"),
    # The workers' queue: pending rows by when they are due, across tenants.
    sa.Index("ix_webhook_deliveries_due", "status", "next_attempt_at"),
)


deployments = sa.Table(
    "deployments",
    metadata,
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
    sa.Column("load", Json, nullable=True),  # the serving replicas' last report (ReplicaLoad)
    sa.Column("created_by", sa.String(200), nullable=True),
    sa.Column("created_at", UtcDateTime(), nullable=False),
    sa.Column("updated_at", UtcDateTime(), nullable=False),
    sa.Column("deleted_at", UtcDateTime(), nullable=True),
    sa.ForeignKeyConstraint(
        ["tenant_id", "model_id"], ["models.tenant_id", "models.id"], name="fk_deployments_model"
    ),
    # One live deployment per name and tenant; a deleted one frees its name.
    sa.Index(
        "uq_deployments_live_name",
        "tenant_id",
        "name",
        unique=True,
        postgresql_where=sa.text("deleted_at IS NULL"),
        sqlite_where=sa.text("deleted_at IS NULL"),
    ),
    sa.Index("ix_deployments_tenant_created", "tenant_id", "created_at", "id"),
)


# Payload logging (migration 0011). A model's policy; its sampled predictions, one row per answered input,
# known by the request id (``{requestId}:{row}`` for a batch's rows; a reused id names several rows,
# the latest counts); and the latest feedback per request id. No foreign keys: the recorder writes in
# batches outside any unit of work, and a deleted model's rows go with it (or with the retention purge).
payload_log_policies = sa.Table(
    "payload_log_policies",
    metadata,
    sa.Column("tenant_id", sa.String(63), primary_key=True),
    sa.Column("model_id", sa.String(36), primary_key=True),
    sa.Column("enabled", sa.Boolean(), nullable=False),
    sa.Column("sample_rate", sa.Float(), nullable=False),
    sa.Column("retention_days", sa.Integer(), nullable=False),
    sa.Column("updated_by", sa.String(200), nullable=True),
    sa.Column("updated_at", UtcDateTime(), nullable=False),
    sa.Column("sink", sa.String(16), nullable=False, server_default="database"),  # migration 0016
)

prediction_logs = sa.Table(
    "prediction_logs",
    metadata,
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
    # The Parquet sink (migration 0016): inputs and outputs are row ``file_row`` of the file ``file_key``.
    sa.Column("file_key", sa.String(300), nullable=True),
    sa.Column("file_row", sa.Integer(), nullable=True),
    sa.Index("ix_prediction_logs_model_created", "tenant_id", "model_id", "created_at", "id"),
    sa.Index("ix_prediction_logs_request", "tenant_id", "request_id"),
    sa.Index("ix_prediction_logs_file", "tenant_id", "file_key"),
)

# The Parquet files of the payload logs (migration 0016), one per (tenant, model) per flush; a row stays
# until its object is deleted from the artifact store.
payload_log_files = sa.Table(
    "payload_log_files",
    metadata,
    sa.Column("tenant_id", sa.String(63), primary_key=True),
    sa.Column("key", sa.String(300), primary_key=True),
    sa.Column("model_id", sa.String(36), nullable=False),
    sa.Column("digest", sa.String(128), nullable=False),
    sa.Column("rows", sa.Integer(), nullable=False),
    sa.Column("min_logged_at", UtcDateTime(), nullable=False),
    sa.Column("max_logged_at", UtcDateTime(), nullable=False),
    sa.Column("created_at", UtcDateTime(), nullable=False),
    sa.Index("ix_payload_log_files_model", "tenant_id", "model_id"),
)

prediction_feedback = sa.Table(
    "prediction_feedback",
    metadata,
    sa.Column("tenant_id", sa.String(63), primary_key=True),
    sa.Column("request_id", sa.String(160), primary_key=True),
    sa.Column("model_id", sa.String(36), nullable=False),
    sa.Column("label", Json, nullable=True),
    sa.Column("has_label", sa.Boolean(), nullable=False),
    sa.Column("reward", sa.Float(), nullable=True),
    sa.Column("created_by", sa.String(200), nullable=True),
    sa.Column("created_at", UtcDateTime(), nullable=False),
    sa.Index("ix_prediction_feedback_model", "tenant_id", "model_id"),
)


# Experiments (migration 0012). One row per experiment, its arms and plans as JSON; at most one running
# experiment per model (a partial unique index). Observations: one row per routed prediction (or
# shadow copy), written in batches off the hot path like the payload logs, so no foreign keys.
experiments = sa.Table(
    "experiments",
    metadata,
    sa.Column("tenant_id", sa.String(63), sa.ForeignKey("tenants.tenant_id"), primary_key=True),
    sa.Column("id", sa.String(36), primary_key=True),
    sa.Column("name", sa.String(128), nullable=False),
    sa.Column("model_id", sa.String(36), nullable=False),
    sa.Column("deployment", sa.String(63), nullable=True),
    sa.Column("mode", sa.String(16), nullable=False),
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("arms", Json, nullable=False),
    sa.Column("champion", sa.String(64), nullable=False),
    sa.Column("routing_key", Json, nullable=True),
    sa.Column("confidence", sa.Float(), nullable=False),
    sa.Column("min_detectable_effect", sa.Float(), nullable=False),
    sa.Column("auto_promote", sa.Boolean(), nullable=False),
    sa.Column("canary", Json, nullable=True),
    sa.Column("bandit", Json, nullable=True),
    sa.Column("canary_step", sa.Integer(), nullable=False),
    sa.Column("step_started_at", UtcDateTime(), nullable=True),
    sa.Column("allocation", Json, nullable=False),
    sa.Column("winner", sa.String(64), nullable=True),
    sa.Column("reason", sa.Text(), nullable=False),
    sa.Column("created_by", sa.String(200), nullable=True),
    sa.Column("created_at", UtcDateTime(), nullable=False),
    sa.Column("updated_at", UtcDateTime(), nullable=False),
    sa.Column("started_at", UtcDateTime(), nullable=True),
    sa.Column("ended_at", UtcDateTime(), nullable=True),
    sa.ForeignKeyConstraint(
        ["tenant_id", "model_id"], ["models.tenant_id", "models.id"], name="fk_experiments_model"
    ),
    sa.Index(
        "uq_experiments_running_model",
        "tenant_id",
        "model_id",
        unique=True,
        postgresql_where=sa.text("status = 'running'"),
        sqlite_where=sa.text("status = 'running'"),
    ),
    sa.Index("ix_experiments_tenant_created", "tenant_id", "created_at", "id"),
    sa.Index("ix_experiments_status", "status"),
)

experiment_observations = sa.Table(
    "experiment_observations",
    metadata,
    sa.Column("tenant_id", sa.String(63), primary_key=True),
    sa.Column("id", sa.String(32), primary_key=True),
    sa.Column("experiment_id", sa.String(36), nullable=False),
    sa.Column("arm", sa.String(64), nullable=False),
    sa.Column("request_id", sa.String(160), nullable=False),
    sa.Column("latency_ms", sa.Float(), nullable=False),
    sa.Column("error", sa.Boolean(), nullable=False),
    sa.Column("prediction", Json, nullable=True),
    sa.Column("shadow", sa.Boolean(), nullable=False),
    sa.Column("created_at", UtcDateTime(), nullable=False),
    sa.Index("ix_experiment_observations_experiment", "tenant_id", "experiment_id", "created_at"),
)


# Drift monitoring (migration 0013). A version's reference profile (JSON, a few hundred KB at most);
# a model's monitoring policy (thresholds, schedule, window, actions as JSON) with its last scheduled
# run; and the drift reports computed, newest first by (created_at, id). No foreign keys, like the
# payload logs they read: a deleted model's rows go with it.
reference_profiles = sa.Table(
    "reference_profiles",
    metadata,
    sa.Column("tenant_id", sa.String(63), primary_key=True),
    sa.Column("model_id", sa.String(36), primary_key=True),
    sa.Column("version", sa.Integer(), primary_key=True),
    sa.Column("profile", Json, nullable=False),
    sa.Column("source", sa.String(140), nullable=False),  # rows, training or dataset:<name>
    sa.Column("created_by", sa.String(200), nullable=True),
    sa.Column("created_at", UtcDateTime(), nullable=False),
)

monitoring_policies = sa.Table(
    "monitoring_policies",
    metadata,
    sa.Column("tenant_id", sa.String(63), primary_key=True),
    sa.Column("model_id", sa.String(36), primary_key=True),
    sa.Column("policy", Json, nullable=False),
    sa.Column("schedule_minutes", sa.Integer(), nullable=True),
    sa.Column("last_run_at", UtcDateTime(), nullable=True),
    sa.Column("updated_by", sa.String(200), nullable=True),
    sa.Column("updated_at", UtcDateTime(), nullable=False),
)

drift_reports = sa.Table(
    "drift_reports",
    metadata,
    sa.Column("tenant_id", sa.String(63), primary_key=True),
    sa.Column("id", sa.String(32), primary_key=True),
    sa.Column("model_id", sa.String(36), nullable=False),
    sa.Column("version", sa.Integer(), nullable=False),
    sa.Column("verdict", sa.String(16), nullable=False),
    sa.Column("score", sa.Float(), nullable=True),
    sa.Column("trigger", sa.String(16), nullable=False),
    sa.Column("window_since", UtcDateTime(), nullable=True),
    sa.Column("window_until", UtcDateTime(), nullable=True),
    sa.Column("report", Json, nullable=False),
    sa.Column("created_at", UtcDateTime(), nullable=False),
    sa.Index("ix_drift_reports_model_created", "tenant_id", "model_id", "created_at", "id"),
)

# Monitoring actions (migration 0014): each automatic step a monitoring policy took (an alert, a
# retraining job, a held-out comparison, a canary promotion, a deployment rollback), with its reason,
# newest first by (created_at, id); ``reference`` names the job, experiment or deployment it touched.
monitoring_actions = sa.Table(
    "monitoring_actions",
    metadata,
    sa.Column("tenant_id", sa.String(63), primary_key=True),
    sa.Column("id", sa.String(32), primary_key=True),
    sa.Column("model_id", sa.String(36), nullable=False),
    sa.Column("version", sa.Integer(), nullable=False),
    sa.Column("action", sa.String(16), nullable=False),
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("trigger", sa.String(16), nullable=False),
    sa.Column("reason", sa.Text(), nullable=False),
    sa.Column("reference", sa.String(200), nullable=True),
    sa.Column("details", Json, nullable=False),
    sa.Column("created_by", sa.String(200), nullable=False),
    sa.Column("created_at", UtcDateTime(), nullable=False),
    sa.Index("ix_monitoring_actions_model_created", "tenant_id", "model_id", "created_at", "id"),
    sa.Index("ix_monitoring_actions_reference", "tenant_id", "reference"),
)

# AutoML studies (ADR 28): one row per study, its finished trials as a JSON list appended as each ends
# (the live leaderboard is read from it), its best trial, the baseline it was compared with, and the
# version its best trial was registered as.
automl_studies = sa.Table(
    "automl_studies",
    metadata,
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
    sa.Column("created_at", UtcDateTime(), nullable=False),
    sa.Column("started_at", UtcDateTime(), nullable=True),
    sa.Column("finished_at", UtcDateTime(), nullable=True),
    sa.Column("updated_at", UtcDateTime(), nullable=False),
    sa.Index("ix_automl_studies_model_created", "tenant_id", "model_id", "created_at"),
)
