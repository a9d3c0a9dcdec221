"""``/models/{model}/automl``: start an AutoML study, look at it, follow its leaderboard (SSE), cancel it."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import datetime
from typing import Annotated, Any, Literal

import orjson
from fastapi import APIRouter, Header, Request, Response, status
from fastapi.responses import StreamingResponse
from pydantic import Field
from starlette.concurrency import run_in_threadpool

from aiservice.application.automl import MAX_PARALLEL, MAX_TRIALS, AutoMLRequest, AutoMLStudies, Study
from aiservice.bootstrap import Container
from aiservice.interfaces.http.deps import CallerDep, ContainerDep, PageCursor, PageLimit
from aiservice.interfaces.http.event_streams import resume_after
from aiservice.interfaces.http.paths import API_PREFIX
from aiservice.interfaces.http.routers.training import DatasetConfigIn
from aiservice.interfaces.http.schemas import ApiModel, PageOut

router = APIRouter(prefix=API_PREFIX, tags=["automl"])
SSE_POLL_S = 0.25
SSE_KEEPALIVE_S = 15.0


class BudgetIn(ApiModel):
    max_trials: int | None = Field(default=None, ge=1, le=MAX_TRIALS, description="Trials at most")
    timeout_seconds: int | None = Field(
        default=None, ge=1, description="Seconds of searching at most (the final refit comes after)"
    )


class AutoMLIn(ApiModel):
    dataset_config: DatasetConfigIn
    task: Literal["classification", "regression"]
    metric: str = Field(
        min_length=1,
        max_length=40,
        description="classification: accuracy, balanced_accuracy, f1_macro, f1_weighted, roc_auc, log_loss; "
        "regression: rmse, mae, r2",
    )
    budget: BudgetIn
    algorithms: list[str] | None = Field(
        default=None,
        max_length=20,
        description="A subset of linear, random_forest, gradient_boosting, mlp; default: all of them",
    )
    search_spaces: dict[str, dict[str, Any]] = Field(
        default_factory=dict,
        description='Per algorithm, per parameter: {"type": "int"|"float", "low", "high", "log"} or '
        '{"type": "categorical", "choices": [...]}, or a plain value to fix the parameter',
        examples=[{"random_forest": {"n_estimators": {"type": "int", "low": 50, "high": 200}}}],
    )
    seed: int = Field(default=0, ge=0, le=2**31 - 1)
    cv_folds: int = Field(default=3, ge=2, le=10, description="Cross-validation folds per trial")
    parallel_trials: int | None = Field(
        default=None,
        ge=1,
        le=MAX_PARALLEL,
        description="Trials run at once, each a training job; default: as many as the job runner runs "
        "(TRAINING_CONCURRENCY; Ray spreads them over the cluster)",
    )


class StudyOut(ApiModel):
    id: str
    model_id: str
    status: str = Field(description="queued, running, succeeded, failed or cancelled")
    task: str
    metric: str
    budget: dict[str, Any]
    algorithms: list[str]
    seed: int
    parallel_trials: int | None = Field(description="Trials run at once, each a training job")
    trials: list[dict[str, Any]] = Field(
        description="Finished trials, in the order they ended; each names its training job (jobId)"
    )
    leaderboard: list[dict[str, Any]] = Field(description="Complete trials, best first")
    best: dict[str, Any] | None
    result: dict[str, Any] | None = Field(
        description="Once succeeded: the best trial, its held-out figure, the baseline's, beatsBaseline"
    )
    beats_baseline: bool | None
    version: int | None = Field(description="The version the best trial was registered as")
    error: str | None
    created_by: str | None
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    links: dict[str, str]

    @classmethod
    def of(cls, study: Study) -> StudyOut:
        base = f"{API_PREFIX}/models/{study.model_id}/automl/{study.id}"
        request = study.request
        greater = request["metric"] not in ("rmse", "mae", "log_loss")
        complete = [t for t in study.trials if t.get("state") == "complete" and t.get("cvScore") is not None]
        board = sorted(complete, key=lambda t: float(t["cvScore"]), reverse=greater)
        links = {"self": base, "events": f"{base}/events", "cancel": f"{base}/cancel"}
        if study.version is not None:
            links["version"] = f"{API_PREFIX}/models/{study.model_id}/versions/{study.version}"
        result = study.result
        return cls(
            id=study.id,
            model_id=study.model_id,
            status=study.status,
            task=request["task"],
            metric=request["metric"],
            budget={"maxTrials": request.get("maxTrials"), "timeoutSeconds": request.get("timeoutSeconds")},
            algorithms=list(request.get("algorithms") or []),
            seed=int(request.get("seed", 0)),
            parallel_trials=request.get("parallelTrials"),
            trials=study.trials,
            leaderboard=board,
            best=(result or {}).get("best") or (board[0] if board else None),
            result=result,
            beats_baseline=result.get("beatsBaseline") if result else None,
            version=study.version,
            error=study.error,
            created_by=study.created_by,
            created_at=study.created_at,
            started_at=study.started_at,
            finished_at=study.finished_at,
            links=links,
        )


def _studies(c: Container) -> AutoMLStudies:
    assert c.automl is not None, "AutoML is wired in bootstrap"
    return c.automl


@router.post(
    "/models/{model}/automl",
    status_code=status.HTTP_202_ACCEPTED,
    response_model=StudyOut,
    summary="Start an AutoML study whose best trial is registered as a new version",
)
def start_study(
    model: str, body: AutoMLIn, caller: CallerDep, c: ContainerDep, response: Response
) -> StudyOut:
    study = _studies(c).submit(
        caller,
        model,
        AutoMLRequest(
            dataset=body.dataset_config.to_domain(),
            task=body.task,
            metric=body.metric,
            max_trials=body.budget.max_trials,
            timeout_seconds=body.budget.timeout_seconds,
            algorithms=tuple(body.algorithms) if body.algorithms is not None else None,
            search_spaces=body.search_spaces,
            seed=body.seed,
            cv_folds=body.cv_folds,
            parallel_trials=body.parallel_trials,
        ),
    )
    out = StudyOut.of(study)
    response.headers["Location"] = out.links["self"]
    return out


@router.get(
    "/models/{model}/automl",
    response_model=PageOut[StudyOut],
    summary="The model's AutoML studies, newest first",
)
def list_studies(
    model: str, caller: CallerDep, c: ContainerDep, limit: PageLimit = 50, cursor: PageCursor = None
) -> PageOut[StudyOut]:
    page = _studies(c).list_studies(caller, model, limit, cursor)
    return PageOut[StudyOut](items=[StudyOut.of(s) for s in page.items], next_cursor=page.next_cursor)


@router.get("/models/{model}/automl/{study}", response_model=StudyOut)
def get_study(model: str, study: str, caller: CallerDep, c: ContainerDep) -> StudyOut:
    return StudyOut.of(_studies(c).get(caller, model, study))


@router.post("/models/{model}/automl/{study}/cancel", response_model=StudyOut)
def cancel_study(model: str, study: str, caller: CallerDep, c: ContainerDep) -> StudyOut:
    return StudyOut.of(_studies(c).cancel(caller, model, study))


@router.get(
    "/models/{model}/automl/{study}/events",
    response_class=StreamingResponse,
    responses={200: {"content": {"text/event-stream": {}}, "description": "Server-Sent Events"}},
    summary="Follow a study's leaderboard: one event per finished trial, then its final status",
)
async def study_events(
    model: str,
    study: str,
    request: Request,
    caller: CallerDep,
    c: ContainerDep,
    last_event_id: Annotated[
        str | None, Header(alias="Last-Event-ID", description="Resume after this event number")
    ] = None,
) -> StreamingResponse:
    """Event ``n`` (1-based) is the n-th finished trial (``event: trial``, with the best so far); the
    stream ends with ``event: status`` once the study has ended (its id one past the last trial's)."""
    studies = _studies(c)
    sent = min(resume_after(last_event_id), MAX_TRIALS)  # a study has at most MAX_TRIALS trial events
    current = await run_in_threadpool(studies.get, caller, model, study)  # 404 before the stream starts

    async def stream() -> AsyncIterator[bytes]:
        nonlocal current, sent
        quiet = 0.0
        while True:
            for trial in current.trials[sent:]:
                sent += 1
                payload = orjson.dumps({**trial, "studyId": current.id})
                yield b"id: %d\nevent: trial\ndata: %s\n\n" % (sent, payload)
                quiet = 0.0
            if current.finished:
                out = StudyOut.of(current)
                final = {
                    "status": current.status,
                    "studyId": current.id,
                    "best": out.best,
                    "version": current.version,
                    "beatsBaseline": out.beats_baseline,
                    "error": current.error,
                }
                yield b"id: %d\nevent: status\ndata: %s\n\n" % (sent + 1, orjson.dumps(final))
                return
            if await request.is_disconnected():
                return
            await asyncio.sleep(SSE_POLL_S)
            quiet += SSE_POLL_S
            if quiet >= SSE_KEEPALIVE_S:
                quiet = 0.0
                yield b": keep-alive\n\n"
            current = await run_in_threadpool(studies.get, caller, model, study)

    return StreamingResponse(
        stream(),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )
