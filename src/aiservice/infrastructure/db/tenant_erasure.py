"""A tenant's rows erased in the unit of work's transaction (GDPR erasure); the tenant row and its
audit chain stay."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from aiservice.application.ports import ErasedRows
from aiservice.infrastructure.db.tables import (
    api_keys,
    automl_studies,
    deployments,
    drift_reports,
    experiment_observations,
    experiments,
    model_aliases,
    model_versions,
    models,
    monitoring_actions,
    monitoring_policies,
    outbox,
    payload_log_files,
    payload_log_policies,
    prediction_feedback,
    prediction_logs,
    reference_profiles,
    training_job_events,
    training_jobs,
    webhook_deliveries,
    webhooks,
)

# Children before parents: the foreign keys hold until the end.
_ORDER = (
    ("monitoringActions", monitoring_actions),
    ("driftReports", drift_reports),
    ("referenceProfiles", reference_profiles),
    ("monitoringPolicies", monitoring_policies),
    ("predictionFeedback", prediction_feedback),
    ("predictionLogs", prediction_logs),
    ("payloadLogFiles", payload_log_files),
    ("payloadLogPolicies", payload_log_policies),
    ("trainingJobEvents", training_job_events),
    ("trainingJobs", training_jobs),
    ("experimentObservations", experiment_observations),
    ("experiments", experiments),
    ("automlStudies", automl_studies),
    ("deployments", deployments),
    ("aliases", model_aliases),
    ("versions", model_versions),
    ("models", models),
    ("apiKeys", api_keys),
    ("webhookDeliveries", webhook_deliveries),
    ("webhooks", webhooks),
    ("outboxEvents", outbox),
)


class SqlAlchemyTenantDataRepository:
    def __init__(self, conn: Connection, tenant_id: str) -> None:
        self._conn = conn
        self._tenant = tenant_id

    def erase_all(self) -> ErasedRows:
        """Delete every model (soft-deleted ones too), version, alias, training job and its events,
        API key, webhook with its deliveries and outbox event of the tenant; returns the counts, the
        models and the artifact keys (the payload logs' Parquet files among them)."""
        rows = self._conn.execute(
            sa.select(model_versions.c.artifact_key, model_versions.c.serving).where(
                model_versions.c.tenant_id == self._tenant
            )
        ).all()
        named = self._conn.execute(
            sa.select(models.c.id, models.c.name).where(models.c.tenant_id == self._tenant)
        ).all()
        payload_files = self._conn.execute(
            sa.select(payload_log_files.c.key).where(payload_log_files.c.tenant_id == self._tenant)
        ).scalars()
        artifact_keys = version_keys(rows) + list(payload_files)
        counts = {
            name: self._conn.execute(table.delete().where(table.c.tenant_id == self._tenant)).rowcount
            for name, table in _ORDER
        }
        return ErasedRows(counts=counts, models={m.id: m.name for m in named}, artifact_keys=artifact_keys)


def version_keys(rows: Iterable[Any]) -> list[str]:
    """The store keys of version rows (``artifact_key``, ``serving``): each artifact and compiled form."""
    rows = list(rows)
    return [row.artifact_key for row in rows] + [k for row in rows if (k := compiled_key(row.serving))]


def compiled_key(serving: Any) -> str | None:
    """The store key of a version's compiled ONNX form, from its ``serving`` column; None if none."""
    onnx = serving.get("onnx") if isinstance(serving, dict) else None
    key = onnx.get("key") if isinstance(onnx, dict) else None
    return key if isinstance(key, str) else None
