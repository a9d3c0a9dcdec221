"""The dashboard's AutoML pages: a model's studies, the form that starts one, a study's page (its result,
leaderboard and chart, refreshed by htmx while it runs) and its cancel button. They call the same use
case as ``routers/automl.py`` and render its ``StudyOut`` shape; kept apart from ``pages.py``."""

from __future__ import annotations

from typing import Annotated, Any
from urllib.parse import quote

from fastapi import APIRouter, Query, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from starlette.concurrency import run_in_threadpool

from aiservice.application.automl import MAX_TRIALS, AutoMLRequest, AutoMLStudies
from aiservice.bootstrap import Container
from aiservice.domain.errors import DomainError, FieldError, InvalidInput
from aiservice.domain.training import DatasetConfig, format_of
from aiservice.interfaces.http.audit_context import note_problem
from aiservice.interfaces.http.deps import ContainerDep
from aiservice.interfaces.http.problems import status_of
from aiservice.interfaces.http.routers.automl import StudyOut
from aiservice.interfaces.http.ui.pages import Cursor, hx_redirect, render, render_list, wire
from aiservice.interfaces.http.ui.session import UI_PREFIX, UiCaller

router = APIRouter()
STUDIES_PAGE = 10
TASKS = ("classification", "regression")
# As ``AutoMLIn.metric`` lists them; a metric of the other task is the use case's 422 on ``metric``.
METRICS = {
    "classification": ("accuracy", "balanced_accuracy", "f1_macro", "f1_weighted", "roc_auc", "log_loss"),
    "regression": ("rmse", "mae", "r2"),
}
# The start form's inputs, each with its longest accepted value.
FORM_LIMITS = {"dataset": 2000, "target": 200, "task": 20, "metric": 40, "max_trials": 12}
# Each input's field in the API's request body, which the use case's errors name.
API_FIELD = {
    "dataset": "datasetConfig.trainPath",
    "target": "datasetConfig.target",
    "task": "task",
    "metric": "metric",
    "max_trials": "budget.maxTrials",
}
# A problem's field -> the form input that shows its message.
INPUT_OF = {
    **{field: name for name, field in API_FIELD.items()},
    "datasetConfig.format": "dataset",
    "budget": "max_trials",
}
DEFAULTS = {"dataset": "", "target": "", "task": "classification", "metric": "accuracy", "max_trials": "10"}


def _studies(c: Container) -> AutoMLStudies:
    assert c.automl is not None, "AutoML is wired in bootstrap"
    return c.automl


def _study_url(model: str, study_id: str) -> str:
    return f"{UI_PREFIX}/models/{quote(model, safe='')}/automl/{study_id}"


def _form_context(values: dict[str, str], error: DomainError | None = None) -> dict[str, Any]:
    """The start form's context: what was typed and, after a refusal, the problem and each field's
    message (next to its input)."""
    field_errors: dict[str, str] = {}
    for e in error.errors if error is not None else []:
        name = INPUT_OF.get(e.field)
        if name is not None and name not in field_errors:
            field_errors[name] = e.message
    return {
        "values": values,
        "tasks": TASKS,
        "metrics": METRICS,
        "field_errors": field_errors,
        "problem": error,
        "max_trials_limit": MAX_TRIALS,
    }


def _automl_request(values: dict[str, str]) -> AutoMLRequest:
    """The form as the API's request body would say it; the use case checks the rest."""
    errors: list[FieldError] = []
    for name, limit in FORM_LIMITS.items():
        if len(values[name]) > limit:
            errors.append(FieldError(API_FIELD[name], f"at most {limit} characters"))
    dataset = values["dataset"]
    if not dataset:
        errors.append(FieldError("datasetConfig.trainPath", "give a path or dataset://NAME"))
    max_trials: int | None = None
    if values["max_trials"]:
        try:
            max_trials = int(values["max_trials"])
        except ValueError:
            errors.append(FieldError("budget.maxTrials", "not a whole number"))
    if errors:
        raise InvalidInput("Check the fields.", errors=errors)
    return AutoMLRequest(
        dataset=DatasetConfig(
            train_path=dataset, format=format_of(dataset) or "", target=values["target"] or None
        ),
        task=values["task"],
        metric=values["metric"],
        max_trials=max_trials,
        timeout_seconds=None,
    )


@router.get("/models/{model}/automl", response_class=HTMLResponse)
def studies_section(
    request: Request, model: str, caller: UiCaller, c: ContainerDep, cursor: Cursor = None
) -> Response:
    """The model page's AutoML section (loaded by htmx); a plain visit goes to the model's page."""
    if request.headers.get("hx-request") != "true":
        return RedirectResponse(f"{UI_PREFIX}/models/{quote(model, safe='')}", status_code=303)
    page = _studies(c).list_studies(caller, model, STUDIES_PAGE, cursor or None)
    return render_list(
        request,
        "_automl_studies.html",
        caller,
        "studies",
        page,
        StudyOut.of,
        model_name=model,
        **_form_context(DEFAULTS),
    )


@router.post("/models/{model}/automl", response_class=HTMLResponse)
async def start_study(request: Request, model: str, caller: UiCaller, c: ContainerDep) -> Response:
    """Start a study from the form; a refusal re-renders the form naming the fields, else the browser goes
    to the study's page."""
    form = await request.form()
    values = {name: str(form.get(name) or "").strip() for name in FORM_LIMITS}
    try:
        study = await run_in_threadpool(_studies(c).submit, caller, model, _automl_request(values))
    except DomainError as exc:
        note_problem(request, exc.code)
        return render(
            request,
            "_automl_form.html",
            caller,
            status_code=status_of(exc),
            model_name=model,
            **_form_context(values, exc),
        )
    return hx_redirect(_study_url(model, study.id))


def _chart(study: dict[str, Any]) -> dict[str, Any] | None:
    """Each trial's cvScore in trial order (None for a pruned or failed one), and the best so far: the
    leaderboard's order says which is best, whichever way the metric goes."""
    trials = sorted(study["trials"], key=lambda t: int(t.get("number") or 0))
    if not trials:
        return None
    rank = {t["number"]: place for place, t in enumerate(study["leaderboard"])}
    leader: dict[str, Any] | None = None
    best: list[Any] = []
    for trial in trials:
        place = rank.get(trial.get("number"))
        if place is not None and (leader is None or place < rank[leader["number"]]):
            leader = trial
        best.append(leader["cvScore"] if leader is not None else None)
    return {
        "labels": [f"#{t.get('number')}" for t in trials],
        "series": {f"cvScore ({study['metric']})": [t.get("cvScore") for t in trials], "best so far": best},
    }


def _study_context(model: str, study: dict[str, Any]) -> dict[str, Any]:
    states = [str(t.get("state")) for t in study["trials"]]
    return {
        "model_name": model,
        "study": study,
        "chart": _chart(study),
        "counts": {s: states.count(s) for s in ("complete", "pruned", "fail")},
        "running": study["status"] in ("queued", "running"),
        "study_url": _study_url(model, study["id"]),
    }


@router.get("/models/{model}/automl/{study}", response_class=HTMLResponse)
def study_page(request: Request, model: str, study: str, caller: UiCaller, c: ContainerDep) -> HTMLResponse:
    found = wire(StudyOut.of(_studies(c).get(caller, model, study)))
    name = c.registry.get_model(caller, found["modelId"]).name
    return render(request, "automl_study.html", caller, **_study_context(name, found))


@router.get("/models/{model}/automl/{study}/live", response_class=HTMLResponse)
def study_fragment(
    request: Request,
    model: str,
    study: str,
    caller: UiCaller,
    c: ContainerDep,
    trials: Annotated[int | None, Query(ge=0, le=100_000)] = None,
    status: Annotated[str | None, Query(max_length=20)] = None,
) -> Response:
    """The study's part of its page, polled by htmx while it runs: 204 (nothing to swap) while neither
    its status nor its trials changed since the page's copy."""
    found = wire(StudyOut.of(_studies(c).get(caller, model, study)))
    if found["status"] == status and len(found["trials"]) == trials:
        return Response(status_code=204)
    return render(request, "_automl_study.html", caller, **_study_context(model, found))


@router.post("/models/{model}/automl/{study}/cancel", response_class=HTMLResponse)
def cancel_study(model: str, study: str, caller: UiCaller, c: ContainerDep) -> Response:
    _studies(c).cancel(caller, model, study)
    return hx_redirect(_study_url(model, study))
