"""``/models/{model}/versions/{version}/reference-profile``, ``/models/{model}/monitoring``,
``/models/{model}/drift`` and ``/models/{model}/performance``: drift and performance monitoring."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Body, Query
from pydantic import Field
from starlette.concurrency import run_in_threadpool

from aiservice.application.monitoring.monitor import MAX_REFERENCE_ROWS
from aiservice.application.monitoring.policy import (
    MAX_COOLDOWN_MINUTES,
    MAX_SCHEDULE_MINUTES,
    MAX_WINDOW_HOURS,
    MonitoringPolicy,
)
from aiservice.application.monitoring.ports import StoredAction, StoredProfile, StoredReport
from aiservice.application.monitoring.reference import MAX_SAMPLE, reference_predictions
from aiservice.domain.errors import FieldError, InvalidInput
from aiservice.domain.models import MAX_VERSION, Model
from aiservice.interfaces.http.deps import CallerDep, ContainerDep, PageCursor, PageLimit
from aiservice.interfaces.http.paths import API_PREFIX
from aiservice.interfaces.http.paths import VersionNumber as PathVersion
from aiservice.interfaces.http.schemas import ApiModel, PageOut

router = APIRouter(prefix=API_PREFIX, tags=["monitoring"])

VersionNumber = Annotated[int, Field(ge=1, le=MAX_VERSION)]


class ReferenceRowsIn(ApiModel):
    rows: list[Any] | None = Field(
        default=None,
        min_length=1,
        max_length=MAX_REFERENCE_ROWS,
        description="Reference rows, as the model's predict takes them: objects of feature values, "
        '``{"features": [...]}`` or lists. The version predicts on them for the prediction profile.',
    )
    dataset_id: str | None = Field(
        default=None,
        min_length=1,
        max_length=128,
        description="Instead of rows: an uploaded dataset (csv or parquet) whose feature columns (the "
        "version's input schema; not the label) are profiled, from a seeded uniform sample of its rows",
    )
    sample: int | None = Field(
        default=None, ge=1, le=MAX_SAMPLE, description=f"Rows of the dataset sampled (default {MAX_SAMPLE})"
    )


class ProfileOut(ApiModel):
    model_id: str
    version: int
    source: str
    created_at: datetime
    created_by: str | None
    rows: int
    sample_rows: int
    features: list[dict[str, Any]] = Field(description="Per feature: its kind and summary statistics")
    prediction: dict[str, Any] | None

    @classmethod
    def of(cls, stored: StoredProfile) -> ProfileOut:
        profile = stored.profile
        prediction = profile.get("prediction")
        return cls(
            model_id=stored.model_id,
            version=stored.version,
            source=stored.source,
            created_at=stored.created_at,
            created_by=stored.created_by,
            rows=profile["rows"],
            sample_rows=profile["sampleRows"],
            features=[_summary(f) for f in profile["features"]],
            prediction=None if prediction is None else _summary(prediction),
        )


class ThresholdsIn(ApiModel):
    psi: float | None = Field(default=None, gt=0, allow_inf_nan=False)
    p_value: float | None = Field(default=None, gt=0, lt=1)
    ks_statistic: float | None = Field(default=None, ge=0, le=1)
    chi2_effect: float | None = Field(default=None, ge=0, allow_inf_nan=False)
    auc: float | None = Field(default=None, ge=0.5, le=1)
    min_window: int | None = Field(default=None, ge=20, le=100_000)


class PolicyIn(ApiModel):
    thresholds: ThresholdsIn = Field(default_factory=ThresholdsIn)
    schedule_minutes: int | None = Field(
        default=None,
        ge=5,
        le=MAX_SCHEDULE_MINUTES,
        description="Check every so many minutes; null: on demand",
    )
    window_hours: int = Field(default=24, ge=1, le=MAX_WINDOW_HOURS, description="A check's window")
    accuracy_floor: float | None = Field(default=None, ge=0, le=1)
    actions: list[Literal["alert", "retrain", "promote", "rollback"]] = Field(
        default_factory=lambda: ["alert"],  # type: ignore[arg-type]
        description="What a check that finds drift, or accuracy below the floor, does on its own",
    )
    enabled: bool = Field(default=True, description="false: no automatic action at all, only the report")
    retrain: dict[str, Any] | None = Field(
        default=None, description='With the retrain action: {"datasetId": "<an uploaded dataset>"}'
    )
    canary: dict[str, Any] | None = Field(
        default=None, description="With promote: the canary plan, as experiments take it (default theirs)"
    )
    cooldown_minutes: int = Field(
        default=60, ge=0, le=MAX_COOLDOWN_MINUTES, description="No second action of a kind within it"
    )


class PolicyOut(ApiModel):
    model_id: str
    thresholds: dict[str, Any]
    schedule_minutes: int | None
    window_hours: int
    accuracy_floor: float | None
    actions: list[str]
    enabled: bool
    retrain: dict[str, Any] | None
    canary: dict[str, Any] | None
    cooldown_minutes: int

    @classmethod
    def of(cls, model: Model, policy: MonitoringPolicy) -> PolicyOut:
        return cls(model_id=model.id, **{_snake(k): v for k, v in policy.to_json().items()})


class DriftIn(ApiModel):
    version: VersionNumber | None = None
    since: datetime | None = Field(default=None, description="From this time (inclusive; UTC if no zone)")
    until: datetime | None = Field(default=None, description="Before this time (default: now)")


class DriftReportOut(ApiModel):
    id: str
    model_id: str
    version: int
    verdict: str = Field(description="drift, no_drift or not_enough_data")
    drifted: bool
    score: float | None = Field(description="The largest PSI over the features and the prediction")
    trigger: str = Field(description="manual or schedule")
    window_since: datetime | None
    window_until: datetime | None
    window_size: int
    created_at: datetime
    thresholds: dict[str, Any]
    features: list[dict[str, Any]] = Field(description="Per feature: its score (PSI) and tests")
    prediction: dict[str, Any] | None
    multivariate: dict[str, Any] | None

    @classmethod
    def of(cls, r: StoredReport) -> DriftReportOut:
        body = r.report
        return cls(
            id=r.id,
            model_id=r.model_id,
            version=r.version,
            verdict=r.verdict,
            drifted=bool(body.get("drifted")),
            score=r.score,
            trigger=r.trigger,
            window_since=r.window_since,
            window_until=r.window_until,
            window_size=body.get("windowSize", 0),
            created_at=r.created_at,
            thresholds=body.get("thresholds", {}),
            features=body.get("features", []),
            prediction=body.get("prediction"),
            multivariate=body.get("multivariate"),
        )


class MonitoringActionOut(ApiModel):
    id: str
    model_id: str
    version: int = Field(description="The version acted on (compare and promote: the retrained one)")
    action: str = Field(description="alert, retrain, compare, promote or rollback")
    status: str = Field(description="done, started (a job or a canary carries on) or failed")
    trigger: str = Field(description="drift, accuracy or training")
    reason: str
    reference: str | None = Field(description="The training job, experiment or deployment it touched")
    details: dict[str, Any]
    created_by: str
    created_at: datetime

    @classmethod
    def of(cls, a: StoredAction) -> MonitoringActionOut:
        return cls(**a.__dict__)


class PerformancePointOut(ApiModel):
    version: int
    start: datetime
    predictions: int
    labelled: int
    metric: str | None = Field(description="accuracy (classification) or rmse (regression); null unlabelled")
    value: float | None


class PerformanceOut(ApiModel):
    model_id: str
    bucket: str
    accuracy_floor: float | None
    below_floor: list[PerformancePointOut] = Field(description="Accuracy points under the policy's floor")
    points: list[PerformancePointOut]


def _utc(moment: datetime | None) -> datetime | None:
    if moment is None or moment.tzinfo is not None:
        return moment
    return moment.replace(tzinfo=UTC)


def _snake(name: str) -> str:
    return "".join(f"_{c.lower()}" if c.isupper() else c for c in name)


def _summary(feature: dict[str, Any]) -> dict[str, Any]:
    """A feature's profile without its sample rows (the GET is a summary)."""
    return {k: v for k, v in feature.items() if k != "sample"}


@router.put("/models/{model}/versions/{version}/reference-profile", response_model=ProfileOut)
async def set_reference_profile(
    model: str, version: PathVersion, body: ReferenceRowsIn, caller: CallerDep, c: ContainerDep
) -> ProfileOut:
    """Profile reference rows (training or validation data) as the version's reference for drift: per
    feature histograms/quantiles or category frequencies, and the version's predictions on the rows
    (computed now, not logged). Replaces an earlier profile. Audited. Send ``rows``, or ``datasetId``
    (and ``sample``) to profile an uploaded dataset (``source`` ``dataset:<id>``)."""
    monitor = c.monitoring.monitor
    if body.dataset_id is not None:
        if body.rows is not None:
            raise InvalidInput(
                "Send rows or datasetId, not both.",
                errors=[FieldError("body.datasetId", "send rows or datasetId, not both")],
            )
        taken = await run_in_threadpool(
            c.monitoring.references.rows, caller, model, version, body.dataset_id, body.sample
        )
        where, rows, source, found = "body.datasetId", taken.rows, taken.source, taken.model
    elif body.rows is None or body.sample is not None:
        field, message = (
            ("body.sample", "goes with datasetId, not rows")
            if body.rows
            else ("body.rows", "send rows or datasetId")
        )
        raise InvalidInput(f"{field}: {message}", errors=[FieldError(field, message)])
    else:
        where, rows, source = "body.rows", body.rows, "rows"
        found = await run_in_threadpool(monitor.prepare_profile, caller, model, version, rows)
    predictions = await reference_predictions(c.inference, caller, found.id, version, rows, where)
    _, stored = await run_in_threadpool(
        monitor.set_profile, caller, found.id, version, rows, predictions, source
    )
    return ProfileOut.of(stored)


@router.get("/models/{model}/versions/{version}/reference-profile", response_model=ProfileOut)
def get_reference_profile(model: str, version: PathVersion, caller: CallerDep, c: ContainerDep) -> ProfileOut:
    """The version's reference profile, summarised (404 when it has none)."""
    _, stored = c.monitoring.monitor.profile(caller, model, version)
    return ProfileOut.of(stored)


@router.get("/models/{model}/monitoring", response_model=PolicyOut)
def get_monitoring(model: str, caller: CallerDep, c: ContainerDep) -> PolicyOut:
    """The model's monitoring policy (the defaults unless set)."""
    found, policy = c.monitoring.monitor.policy(caller, model)
    return PolicyOut.of(found, policy)


@router.put("/models/{model}/monitoring", response_model=PolicyOut)
def set_monitoring(model: str, body: PolicyIn, caller: CallerDep, c: ContainerDep) -> PolicyOut:
    """Drift thresholds, the schedule of automatic checks, their window and the actions on drift.
    Audited."""
    raw = body.model_dump(by_alias=True, exclude_unset=True)
    raw["thresholds"] = body.thresholds.model_dump(by_alias=True, exclude_none=True)
    found, policy = c.monitoring.monitor.set_policy(caller, model, raw)
    return PolicyOut.of(found, policy)


@router.post("/models/{model}/drift", response_model=DriftReportOut)
def check_drift(
    model: str, caller: CallerDep, c: ContainerDep, body: Annotated[DriftIn | None, Body()] = None
) -> DriftReportOut:
    """Compare a window of logged traffic (default: the policy's last ``windowHours``, of the version
    that answered last) with the version's reference profile, now. Stores the report; a drifted one
    raises a ``ai.model.drift_detected.v1`` event and sets ``ai_service_model_drift_score``."""
    given = body or DriftIn()
    report = c.monitoring.monitor.check(caller, model, given.version, _utc(given.since), _utc(given.until))
    return DriftReportOut.of(report)


@router.get("/models/{model}/drift", response_model=PageOut[DriftReportOut])
def list_drift(
    model: str,
    caller: CallerDep,
    c: ContainerDep,
    version: Annotated[int | None, Query(ge=1, le=MAX_VERSION)] = None,
    limit: PageLimit = 20,
    cursor: PageCursor = None,
) -> PageOut[DriftReportOut]:
    """The model's drift reports, newest first, with per-feature scores."""
    _, page = c.monitoring.monitor.reports(caller, model, version, limit, cursor)
    return PageOut[DriftReportOut](
        items=[DriftReportOut.of(r) for r in page.items], next_cursor=page.next_cursor
    )


@router.get("/models/{model}/performance", response_model=PerformanceOut)
def get_performance(
    model: str,
    caller: CallerDep,
    c: ContainerDep,
    bucket: Literal["hour", "day"] = "hour",
    version: Annotated[int | None, Query(ge=1, le=MAX_VERSION)] = None,
    since: Annotated[
        datetime | None, Query(description="Default: 2 days (hour) or 30 days (day) ago")
    ] = None,
    until: Annotated[datetime | None, Query(description="Default: now")] = None,
) -> PerformanceOut:
    """Rolling accuracy (classification) or RMSE (regression) per version and hour or day, from logged
    predictions with feedback."""
    found, policy, points = c.monitoring.monitor.performance(
        caller, model, bucket, version, _utc(since), _utc(until)
    )
    out = [PerformancePointOut(**p.__dict__) for p in points]
    floor = policy.accuracy_floor
    below = [
        p
        for p in out
        if floor is not None and p.metric == "accuracy" and p.value is not None and p.value < floor
    ]
    return PerformanceOut(
        model_id=found.id, bucket=bucket, accuracy_floor=floor, below_floor=below, points=out
    )


@router.get("/models/{model}/monitoring/actions", response_model=PageOut[MonitoringActionOut])
def list_monitoring_actions(
    model: str, caller: CallerDep, c: ContainerDep, limit: PageLimit = 20, cursor: PageCursor = None
) -> PageOut[MonitoringActionOut]:
    """What the model's monitoring policy did on its own (alerts, retraining, comparisons, canary
    promotions, rollbacks), newest first, each with its reason."""
    _, page = c.monitoring.monitor.action_history(caller, model, limit, cursor)
    return PageOut[MonitoringActionOut](
        items=[MonitoringActionOut.of(a) for a in page.items], next_cursor=page.next_cursor
    )
