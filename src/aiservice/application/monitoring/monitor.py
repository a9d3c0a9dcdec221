"""Drift monitoring use cases: a version's reference profile, a model's monitoring policy, drift
checks over its logged traffic (on demand and on a schedule), their history, and rolling performance.

Permissions: profiles, policies, reports and performance are read with ``model:read`` (they hold
aggregates, never a logged payload); setting a profile or a policy, and running a check (it stores a
report and may raise an event), need ``model:write``. Every change commits through a unit of work,
so it is audited.

A check reads the logged predictions of ``[since, until)`` (default: the policy's last
``windowHours``) of one version (default: the version that answered the newest logged prediction),
the newest ``max_window`` of them, compares them with that version's profile (``drift.detect_drift``),
stores the report, sets the ``ai_service_model_drift_score`` gauge, and, when it drifted, writes a
``ModelDriftDetected`` event in the same transaction as the report.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any

import numpy as np

from aiservice.application.audit import note_changes
from aiservice.application.monitoring.actions import MonitoringActions
from aiservice.application.monitoring.decisions import CheckOutcome
from aiservice.application.monitoring.drift import DomainClassifier, detect_drift
from aiservice.application.monitoring.features import aligned, feature_row, feature_rows
from aiservice.application.monitoring.performance import (
    Bucket,
    PerformancePoint,
    overall,
    rolling_performance,
)
from aiservice.application.monitoring.policy import MonitoringPolicy
from aiservice.application.monitoring.ports import (
    DriftMetrics,
    MonitoringSchedule,
    MonitoringUnitOfWork,
    MonitoringUnitOfWorkFactory,
    NoDriftMetrics,
    StoredAction,
    StoredProfile,
    StoredReport,
)
from aiservice.application.monitoring.profiles import ReferenceProfile, build_profile
from aiservice.application.payload_logging.ports import PredictionQuery
from aiservice.application.ports import Clock
from aiservice.application.registry import find_model
from aiservice.domain.errors import Conflict, DomainError, FieldError, InvalidInput, NotFound
from aiservice.domain.events import ModelDriftDetected
from aiservice.domain.models import Model, ModelVersion
from aiservice.domain.pagination import Page
from aiservice.domain.payload_logging import LoggedPrediction
from aiservice.domain.tenancy import Permission, Principal, Role

log = logging.getLogger(__name__)

MAX_REFERENCE_ROWS = 10_000
MAX_WINDOW = 10_000
MAX_PERFORMANCE_WINDOW = 100_000
SYSTEM_SUBJECT = "system:drift-monitor"


def system_principal(tenant_id: str) -> Principal:
    return Principal(SYSTEM_SUBJECT, tenant_id, frozenset({Role.ADMIN}))


class DriftMonitoring:
    def __init__(
        self,
        uow: MonitoringUnitOfWorkFactory,
        clock: Clock,
        *,
        metrics: DriftMetrics | None = None,
        classifier: DomainClassifier | None = None,
        max_window: int = MAX_WINDOW,
    ) -> None:
        self._uow = uow
        self._clock = clock
        self._metrics = metrics or NoDriftMetrics()
        self._classifier = classifier  # the multivariate check; None: per-feature tests only
        self.max_window = max_window
        self.actions: MonitoringActions | None = None  # what a policy does on its own (set when wired)

    # -- reference profiles ----------------------------------------------------------------------

    def prepare_profile(
        self, principal: Principal, model_ident: str, version: int, rows: Sequence[Any]
    ) -> Model:
        """Checks a profile may be set from ``rows`` (before the version predicts on them); the model."""
        principal.require(Permission.MODEL_WRITE)
        _check_rows(rows)
        with self._uow(principal.tenant_id, writes=False) as uow:
            model = find_model(uow, model_ident, principal)
            _require_version(uow, model, version)
            return model

    def set_profile(
        self,
        principal: Principal,
        model_ident: str,
        version: int,
        rows: Sequence[Any],
        predictions: Sequence[Any] | None,
        source: str = "rows",
    ) -> tuple[Model, StoredProfile]:
        """Profiles reference ``rows`` (and the version's ``predictions`` on them) and stores it as the
        version's reference, replacing an earlier one. CPU-bound: call it off the event loop."""
        principal.require(Permission.MODEL_WRITE)
        profile = build_profile(_check_rows(rows), predictions=predictions)
        with self._uow(principal.tenant_id) as uow:
            model = find_model(uow, model_ident, principal)
            _require_version(uow, model, version)
            stored = StoredProfile(
                model.id, version, profile.to_dict(), source, self._clock(), principal.subject
            )
            uow.monitoring.put_profile(stored)
            note_changes({}, {"referenceProfile": {"version": version, "rows": profile.rows}})
            uow.commit()
        return model, stored

    def training_profile(self, tenant_id: str, version: ModelVersion, profile: Mapping[str, Any]) -> None:
        """Stores the profile a training job computed on its validation data as the version's
        reference (``source`` training), unless one was set meanwhile."""
        ReferenceProfile.from_dict(profile)  # refuses anything that is not one
        with self._uow(tenant_id) as uow:
            if uow.monitoring.profile(version.model_id, version.version) is not None:
                return
            stored = StoredProfile(
                version.model_id,
                version.version,
                dict(profile),
                "training",
                self._clock(),
                version.created_by,
            )
            uow.monitoring.put_profile(stored)
            uow.commit()

    def profile(self, principal: Principal, model_ident: str, version: int) -> tuple[Model, StoredProfile]:
        principal.require(Permission.MODEL_READ)
        with self._uow(principal.tenant_id, writes=False) as uow:
            model = find_model(uow, model_ident, principal)
            stored = uow.monitoring.profile(model.id, version)
        if stored is None:
            raise NotFound(
                f"Version {version} of model {model.name!r} has no reference profile.",
                extra={"model": model.name, "version": version},
            )
        return model, stored

    # -- the policy ------------------------------------------------------------------------------

    def policy(self, principal: Principal, model_ident: str) -> tuple[Model, MonitoringPolicy]:
        principal.require(Permission.MODEL_READ)
        with self._uow(principal.tenant_id, writes=False) as uow:
            model = find_model(uow, model_ident, principal)
            return model, uow.monitoring.policy(model.id) or MonitoringPolicy()

    def set_policy(
        self, principal: Principal, model_ident: str, raw: Mapping[str, Any]
    ) -> tuple[Model, MonitoringPolicy]:
        principal.require(Permission.MODEL_WRITE)
        policy = MonitoringPolicy.parse(raw)
        if self.actions is not None:
            self.actions.check_policy(principal.tenant_id, policy)
        with self._uow(principal.tenant_id) as uow:
            model = find_model(uow, model_ident, principal)
            before = uow.monitoring.policy(model.id) or MonitoringPolicy()
            uow.monitoring.set_policy(model.id, policy, self._clock(), principal.subject)
            note_changes(before.to_json(), policy.to_json())
            uow.commit()
        return model, policy

    # -- drift -----------------------------------------------------------------------------------

    def check(
        self,
        principal: Principal,
        model_ident: str,
        version: int | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
        trigger: str = "manual",
    ) -> StoredReport:
        """Compares the window's logged traffic with the version's profile; the stored report."""
        principal.require(Permission.MODEL_WRITE)
        now = self._clock()
        if since is not None and until is not None and since >= until:
            raise InvalidInput(
                "The window is empty: since must come before until.",
                errors=[FieldError("body.since", "must be before until")],
            )
        with self._uow(principal.tenant_id, writes=False) as uow:
            model = find_model(uow, model_ident, principal)
            policy = uow.monitoring.policy(model.id) or MonitoringPolicy()
            until = until or now
            since = since or until - timedelta(hours=policy.window_hours)
            # the newest rows of the window when it holds more than max_window: what traffic is now
            query = PredictionQuery(version, since, until, self.max_window)
            logged = list(reversed(uow.payload_logs.page(model.id, query).items))
            if version is None:
                version = _newest_version(uow, model, logged)
            logged = [p for p in logged if p.version == version]
            stored = uow.monitoring.profile(model.id, version)
        if stored is None:
            raise Conflict(
                f"Version {version} of model {model.name!r} has no reference profile to compare with: "
                "set one first (PUT .../versions/{n}/reference-profile).",
                code="no-reference-profile",
                extra={"model": model.name, "version": version},
            )
        report = self._compare(ReferenceProfile.from_dict(stored.profile), logged, policy, now)
        result = StoredReport(
            id=uuid.uuid4().hex,
            model_id=model.id,
            version=version,
            verdict=report["verdict"],
            score=report["score"],
            trigger=trigger,
            window_since=since,
            window_until=until,
            report=report,
            created_at=now,
        )
        with self._uow(principal.tenant_id) as uow:
            uow.monitoring.add_report(result)
            if report["drifted"]:
                uow.record(_drift_event(principal.tenant_id, result))
            if trigger == "schedule":
                uow.monitoring.mark_run(model.id, now)
            uow.commit()
        if result.score is not None:
            self._metrics.drift_score(model.name, version, result.score)
        if self.actions is not None:  # the policy's actions on drift, or on accuracy below its floor
            metric, value, labelled = overall(logged)
            accuracy = value if metric == "accuracy" else None
            outcome = CheckOutcome(principal.tenant_id, model, policy, result, accuracy, labelled)
            self.actions.after_check(outcome)
        return result

    def _compare(
        self,
        profile: ReferenceProfile,
        logged: Sequence[LoggedPrediction],
        policy: MonitoringPolicy,
        now: datetime,
    ) -> dict[str, Any]:
        rows, predictions = [], []
        for p in logged:
            row = feature_row(p.inputs, profile.feature_names)
            if row is not None:
                rows.append(row)
                predictions.append(p.outputs.get("prediction") if isinstance(p.outputs, dict) else None)
        report = detect_drift(
            profile,
            aligned(rows, profile.feature_names),  # no row: a window of size 0, not enough data
            computed_at=now,
            predictions=np.asarray(predictions) if profile.prediction is not None else None,
            thresholds=policy.thresholds,
            classifier=self._classifier,
        )
        return report.to_dict()

    def reports(
        self, principal: Principal, model_ident: str, version: int | None, limit: int, cursor: str | None
    ) -> tuple[Model, Page[StoredReport]]:
        """The model's drift reports, newest first."""
        principal.require(Permission.MODEL_READ)
        with self._uow(principal.tenant_id, writes=False) as uow:
            model = find_model(uow, model_ident, principal)
            return model, uow.monitoring.reports(model.id, version, limit, cursor)

    def action_history(
        self, principal: Principal, model_ident: str, limit: int, cursor: str | None
    ) -> tuple[Model, Page[StoredAction]]:
        """What the model's policy did on its own (``actions.py``), newest first."""
        principal.require(Permission.MODEL_READ)
        with self._uow(principal.tenant_id, writes=False) as uow:
            model = find_model(uow, model_ident, principal)
            return model, uow.monitoring.actions(model.id, limit, cursor)

    # -- performance -----------------------------------------------------------------------------

    def performance(
        self,
        principal: Principal,
        model_ident: str,
        bucket: Bucket,
        version: int | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
    ) -> tuple[Model, MonitoringPolicy, list[PerformancePoint]]:
        """Accuracy or RMSE per version and bucket, from logged predictions joined with feedback."""
        principal.require(Permission.MODEL_READ)
        with self._uow(principal.tenant_id, writes=False) as uow:
            model = find_model(uow, model_ident, principal)
            policy = uow.monitoring.policy(model.id) or MonitoringPolicy()
            until = until or self._clock()
            since = since or until - timedelta(days=30 if bucket == "day" else 2)
            logged = uow.payload_logs.window(model.id, version, since, until, MAX_PERFORMANCE_WINDOW)
        return model, policy, rolling_performance(logged, bucket)

    # -- the schedule and deletion ---------------------------------------------------------------

    def run_scheduled(self, schedule: MonitoringSchedule) -> int:
        """Runs every due scheduled check (the host worker's periodic duty); the number run. A check
        that cannot run (no profile yet) is logged and tried again at its next time."""
        ran = 0
        for tenant_id, model_id in schedule.due(self._clock()):
            try:
                self.check(system_principal(tenant_id), model_id, trigger="schedule")
                ran += 1
                continue
            except DomainError as exc:
                log.info("scheduled drift check of model %s skipped: %s", model_id, exc.detail)
            except Exception:  # one model's failure must not starve the others; it waits its turn
                log.warning("scheduled drift check of model %s failed", model_id, exc_info=True)
            with self._uow(tenant_id) as uow:
                uow.monitoring.mark_run(model_id, self._clock())
                uow.commit()
        return ran

    def forget_model(self, tenant_id: str, model_id: str) -> None:
        """A model was deleted: its profiles, policy and reports go with it."""
        with self._uow(tenant_id) as uow:
            uow.monitoring.erase_model(model_id)
            uow.commit()


def _check_rows(rows: Sequence[Any]) -> list[dict[str, Any]]:
    if not 1 <= len(rows) <= MAX_REFERENCE_ROWS:
        raise InvalidInput(
            f"Send 1 to {MAX_REFERENCE_ROWS} reference rows, not {len(rows)}.",
            errors=[FieldError("body.rows", f"must hold 1-{MAX_REFERENCE_ROWS} rows")],
        )
    return feature_rows(rows)


def _require_version(uow: MonitoringUnitOfWork, model: Model, version: int) -> None:
    if uow.versions.get(model.id, version) is None:
        raise NotFound(
            f"Model {model.name!r} has no version {version}.", extra={"model": model.name, "version": version}
        )


def _newest_version(uow: MonitoringUnitOfWork, model: Model, logged: Sequence[LoggedPrediction]) -> int:
    """The version that answered the newest logged prediction, else the newest with a profile."""
    if logged:
        return logged[-1].version
    stored = uow.monitoring.profile(model.id, None)
    if stored is None:
        raise Conflict(
            f"Model {model.name!r} has no logged prediction and no reference profile to check.",
            code="no-reference-profile",
            extra={"model": model.name},
        )
    return stored.version


def _drift_event(tenant_id: str, report: StoredReport) -> ModelDriftDetected:
    body = report.report
    prediction = body.get("prediction")
    return ModelDriftDetected(
        tenant_id=tenant_id,
        aggregate_id=report.model_id,
        version=report.version,
        report_id=report.id,
        score=float(report.score or 0.0),
        drifted_features=[f["feature"] for f in body.get("features", []) if f.get("drifted")],
        prediction_drifted=bool(prediction and prediction.get("drifted")),
        window_size=int(body.get("windowSize", 0)),
        trigger=report.trigger,
    )
