"""``/models/{model}/payload-logging``, ``/models/{model}/predictions`` and ``/predictions``: a model's
payload logging policy, its logged predictions, and feedback on them (joined by request id)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import APIRouter, Query
from pydantic import Field

from aiservice.application.payload_logging.ports import PredictionQuery
from aiservice.domain.models import MAX_VERSION, Model
from aiservice.domain.payload_logging import (
    MAX_FEEDBACK_ITEMS,
    MAX_REQUEST_ID,
    MAX_RETENTION_DAYS,
    Feedback,
    LoggedPrediction,
    LoggingPolicy,
)
from aiservice.interfaces.http.deps import CallerDep, ContainerDep, PageCursor, PageLimit
from aiservice.interfaces.http.paths import API_PREFIX
from aiservice.interfaces.http.schemas import ApiModel, PageOut

router = APIRouter(prefix=API_PREFIX, tags=["payload logging"])

RequestId = Annotated[str, Field(min_length=1, max_length=MAX_REQUEST_ID)]


class PolicyIn(ApiModel):
    enabled: bool = True
    sample_rate: float = Field(default=1.0, gt=0, le=1, description="Fraction of requests logged, (0, 1]")
    retention_days: int = Field(default=30, ge=1, le=MAX_RETENTION_DAYS, description="Days a log is kept")
    sink: str = Field(default="database", description="Where inputs and outputs go: database or parquet")


class PolicyOut(ApiModel):
    model_id: str
    enabled: bool
    sample_rate: float
    retention_days: int
    sink: str

    @classmethod
    def of(cls, model: Model, policy: LoggingPolicy) -> PolicyOut:
        return cls(
            model_id=model.id,
            enabled=policy.enabled,
            sample_rate=policy.sample_rate,
            retention_days=policy.retention_days,
            sink=policy.sink,
        )


class FeedbackIn(ApiModel):
    label: Any = Field(default=None, description="The true label (any JSON; a regression's true value)")
    reward: float | None = Field(default=None, allow_inf_nan=False, description="A reward, for bandits")


class FeedbackItemIn(FeedbackIn):
    request_id: RequestId


class FeedbackBatchIn(ApiModel):
    items: list[FeedbackItemIn] = Field(min_length=1, max_length=MAX_FEEDBACK_ITEMS)


class FeedbackOut(ApiModel):
    request_id: str
    label: Any = None
    reward: float | None = None
    created_at: datetime | None
    created_by: str | None

    @classmethod
    def of(cls, f: Feedback) -> FeedbackOut:
        return cls(
            request_id=f.request_id,
            label=f.label if f.has_label else None,
            reward=f.reward,
            created_at=f.created_at,
            created_by=f.created_by,
        )


class FeedbackResultOut(ApiModel):
    request_id: str
    status: str = Field(description="stored, or not-found when no prediction was logged under the id")
    feedback: FeedbackOut | None = None


class FeedbackBatchOut(ApiModel):
    stored: int
    missing: int
    results: list[FeedbackResultOut] = Field(description="One per item, in order")


class LoggedPredictionOut(ApiModel):
    request_id: str = Field(description="X-Request-ID, with :{row} for each row of a batch")
    model_id: str
    version: int
    deployment: str | None = None
    experiment_id: str | None = None
    arm: str | None = None
    inputs: Any
    outputs: Any
    latency_ms: float
    created_at: datetime
    feedback: FeedbackOut | None = None
    payload_unavailable: bool = Field(
        default=False, description="Its Parquet file is missing or corrupt: inputs and outputs are null"
    )

    @classmethod
    def of(cls, p: LoggedPrediction) -> LoggedPredictionOut:
        return cls(
            request_id=p.request_id,
            model_id=p.model_id,
            version=p.version,
            deployment=p.deployment,
            experiment_id=p.experiment_id,
            arm=p.arm,
            inputs=p.inputs,
            outputs=p.outputs,
            latency_ms=p.latency_ms,
            created_at=p.created_at,
            feedback=None if p.feedback is None else FeedbackOut.of(p.feedback),
            payload_unavailable=p.payload_unavailable,
        )


class ErasedOut(ApiModel):
    predictions: int
    feedback: int


def _utc(moment: datetime | None) -> datetime | None:
    """A time without a zone is read as UTC."""
    if moment is None or moment.tzinfo is not None:
        return moment
    return moment.replace(tzinfo=UTC)


@router.get("/models/{model}/payload-logging", response_model=PolicyOut)
def get_payload_logging(model: str, caller: CallerDep, c: ContainerDep) -> PolicyOut:
    """The model's payload logging policy (off unless set)."""
    found, policy = c.payload_logging.logs.policy(caller, model)
    return PolicyOut.of(found, policy)


@router.put("/models/{model}/payload-logging", response_model=PolicyOut)
def set_payload_logging(model: str, body: PolicyIn, caller: CallerDep, c: ContainerDep) -> PolicyOut:
    """Turn logging of the model's predictions (inputs and outputs) on or off, with the fraction of
    requests logged (chosen by request id) and the days a log is kept. Audited."""
    found, policy = c.payload_logging.logs.set_policy(caller, model, body.model_dump(by_alias=True))
    return PolicyOut.of(found, policy)


@router.get("/models/{model}/predictions", response_model=PageOut[LoggedPredictionOut])
def list_predictions(
    model: str,
    caller: CallerDep,
    c: ContainerDep,
    version: Annotated[int | None, Query(ge=1, le=MAX_VERSION)] = None,
    since: Annotated[datetime | None, Query(description="From this time (inclusive; UTC if no zone)")] = None,
    until: Annotated[datetime | None, Query(description="Before this time (UTC if no zone)")] = None,
    limit: PageLimit = 50,
    cursor: PageCursor = None,
) -> PageOut[LoggedPredictionOut]:
    """The model's logged predictions, newest first, each with its feedback."""
    query = PredictionQuery(version, _utc(since), _utc(until), limit, cursor)
    page = c.payload_logging.logs.predictions(caller, model, query)
    return PageOut[LoggedPredictionOut](
        items=[LoggedPredictionOut.of(p) for p in page.items], next_cursor=page.next_cursor
    )


@router.delete("/models/{model}/predictions", response_model=ErasedOut)
def erase_predictions(model: str, caller: CallerDep, c: ContainerDep) -> ErasedOut:
    """Erase every logged prediction of the model and the feedback on them (the policy stays). Audited."""
    counts = c.payload_logging.logs.erase(caller, model)
    return ErasedOut(predictions=counts["predictions"], feedback=counts["feedback"])


@router.get("/predictions/{request_id}", response_model=LoggedPredictionOut)
def get_prediction(request_id: str, caller: CallerDep, c: ContainerDep) -> LoggedPredictionOut:
    """A logged prediction by its request id (``{requestId}:{row}`` for a batch's row), with its feedback."""
    return LoggedPredictionOut.of(c.payload_logging.logs.get(caller, request_id))


@router.post("/predictions/{request_id}/feedback", response_model=FeedbackOut)
def send_feedback(request_id: str, body: FeedbackIn, caller: CallerDep, c: ContainerDep) -> FeedbackOut:
    """The true ``label`` and/or a ``reward`` for a logged prediction; feedback sent again replaces the
    earlier one (audited). 404 when no prediction was logged under the id in the caller's tenant."""
    raw = body.model_dump(by_alias=True, exclude_unset=True)
    return FeedbackOut.of(c.payload_logging.logs.feedback(caller, request_id, raw))


@router.post("/predictions/feedback", response_model=FeedbackBatchOut)
def send_feedback_batch(body: FeedbackBatchIn, caller: CallerDep, c: ContainerDep) -> FeedbackBatchOut:
    """Feedback for up to 1,000 predictions. An invalid item fails the whole batch (422, nothing
    stored); an item whose request id names no logged prediction is reported ``not-found`` and the
    others are stored."""
    items = [item.model_dump(by_alias=True, exclude_unset=True) for item in body.items]
    outcomes = c.payload_logging.logs.feedback_many(caller, items)
    results = [
        FeedbackResultOut(
            request_id=o.request_id,
            status="not-found" if o.feedback is None else "stored",
            feedback=None if o.feedback is None else FeedbackOut.of(o.feedback),
        )
        for o in outcomes
    ]
    missing = sum(1 for o in outcomes if o.missing)
    return FeedbackBatchOut(stored=len(outcomes) - missing, missing=missing, results=results)
