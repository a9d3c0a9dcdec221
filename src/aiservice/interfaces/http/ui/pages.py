"""The dashboard's pages: each one calls the same use cases as the API's routers, in process, and renders
their answers (the routers' own ``*Out`` shapes) with Jinja2 templates; forms are sent by htmx."""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, Literal

import orjson
from fastapi import APIRouter, Form, Query, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from fastapi.templating import Jinja2Templates
from starlette.concurrency import run_in_threadpool

from aiservice.application.deploying.deployments import DeploymentFilter
from aiservice.application.experimenting.experiments import ExperimentFilter
from aiservice.application.inference import PredictOptions
from aiservice.application.ports import ModelQuery
from aiservice.application.registry import NewModel
from aiservice.domain.audit import AuditQuery
from aiservice.domain.errors import DomainError, FieldError, InvalidInput
from aiservice.domain.models import FRAMEWORK_NAME, Framework, Stage
from aiservice.domain.pagination import Page
from aiservice.domain.tenancy import Permission, Principal
from aiservice.interfaces.http.deps import ContainerDep
from aiservice.interfaces.http.paths import VersionNumber
from aiservice.interfaces.http.routers import export as export_routes
from aiservice.interfaces.http.routers import training as training_routes
from aiservice.interfaces.http.routers.audit import AuditRecordOut
from aiservice.interfaces.http.routers.deployments import DeploymentOut
from aiservice.interfaces.http.routers.experiments import ExperimentOut
from aiservice.interfaces.http.routers.monitoring import DriftReportOut
from aiservice.interfaces.http.routers.training import JobOut
from aiservice.interfaces.http.schemas import ModelOut, VersionOut
from aiservice.interfaces.http.ui.session import (
    UI_PREFIX,
    UiCaller,
    check_credential,
    end_session,
    keep_session,
    require_same_origin,
)
from aiservice.interfaces.http.uploads import receive_version

HERE = Path(__file__).parent
templates = Jinja2Templates(directory=HERE / "templates")
router = APIRouter()
PAGE = 25
# The dashboard's own pages load only its own files; charts and htmx need no inline script.
CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'"
)
KNOWN_FRAMEWORKS = ("sklearn", "xgboost", "lightgbm", "pytorch", "keras", "onnx")
SECTIONS = {
    "models": "models",
    "model": "models",
    "drift": "models",
    "jobs": "jobs",
    "job": "jobs",
    "deployments": "deployments",
    "experiments": "experiments",
    "experiment": "experiments",
    "audit": "audit",
    "automl_study": "models",
}
FEATURE_TYPES = ("number", "integer", "string", "boolean", "category")
# The edge bundles each framework's versions export to (ADR 30), offered as links on its versions.
EXPORT_FORMATS = {
    "sklearn": ("onnx",),
    "xgboost": ("onnx",),
    "lightgbm": ("onnx",),
    "onnx": ("onnx",),
    "pytorch": ("onnx", "torchscript"),
    "keras": ("tflite",),
}


def render(
    request: Request,
    name: str,
    caller: Principal | None = None,
    status_code: int = 200,
    **context: Any,
) -> HTMLResponse:
    permissions = caller.permissions if caller is not None else frozenset()
    section = SECTIONS.get(name.removesuffix(".html"), "")
    response = templates.TemplateResponse(
        request,
        name,
        {
            "caller": caller,
            "can": lambda permission: Permission(permission) in permissions,
            "prefix": UI_PREFIX,
            "section": section,
            **context,
        },
        status_code=status_code,
    )
    response.headers["Content-Security-Policy"] = CSP
    return response


def to_json(value: Any) -> str:
    """Data for a chart, inside a ``<script type="application/json">`` (never executed)."""
    return orjson.dumps(value, default=str).decode().replace("</", "<\\/")


templates.env.filters["tojson_data"] = to_json


def wire(model: Any) -> dict[str, Any]:
    dumped: dict[str, Any] = model.model_dump(mode="json", by_alias=True)
    return dumped


Cursor = Annotated[str | None, Query(max_length=1000)]


def render_list(
    request: Request,
    name: str,
    caller: Principal,
    key: str,
    page: Page[Any],
    shape: Callable[[Any], Any],
    **context: Any,
) -> HTMLResponse:
    """A list page: one page of a use case's answers in the API's own ``*Out`` shape, and the cursor
    of the next page."""
    context[key] = [wire(shape(item)) for item in page.items]
    return render(request, name, caller, next_cursor=page.next_cursor, **context)


def hx_redirect(location: str) -> Response:
    return Response(status_code=204, headers={"HX-Redirect": location})


# --- session -------------------------------------------------------------------------------------


@router.get("/login", response_class=HTMLResponse)
def login_page(request: Request) -> HTMLResponse:
    return render(request, "login.html")


@router.post("/login", response_class=HTMLResponse)
async def login(
    request: Request,
    token: Annotated[str, Form(max_length=8000)],
    tenant: Annotated[str, Form(max_length=200)] = "",
) -> Response:
    require_same_origin(request)
    try:
        await check_credential(request, token, tenant.strip() or None)
    except DomainError as exc:  # a bad or expired token, another tenant: say why, keep no cookie
        return render(request, "_login_error.html", status_code=401, message=exc.detail)
    response = hx_redirect(f"{UI_PREFIX}/models")
    keep_session(response, request, token, tenant.strip() or None)
    return response


@router.post("/logout")
def logout(request: Request) -> Response:
    require_same_origin(request)
    response = hx_redirect(f"{UI_PREFIX}/login")
    end_session(response, request)
    return response


@router.get("/")
def home(_caller: UiCaller) -> RedirectResponse:
    return RedirectResponse(f"{UI_PREFIX}/models", status_code=303)


# --- models --------------------------------------------------------------------------------------


@router.get("/models", response_class=HTMLResponse)
def models_page(
    request: Request,
    caller: UiCaller,
    c: ContainerDep,
    q: Annotated[str | None, Query(max_length=200)] = None,
    framework: Annotated[str | None, Query(max_length=20)] = None,
    category: Annotated[str | None, Query(max_length=100)] = None,
    tag: Annotated[str | None, Query(max_length=64)] = None,
    cursor: Cursor = None,
) -> HTMLResponse:
    framework = framework or None
    if framework is not None and not FRAMEWORK_NAME.fullmatch(framework):
        raise InvalidInput(
            "Unknown framework.", errors=[FieldError("query.framework", "not a framework name")]
        )
    page = c.registry.list_models(
        caller,
        ModelQuery(
            framework=Framework(framework) if framework else None,
            category=category or None,
            tag=tag or None,
            text=q or None,
            limit=PAGE,
            cursor=cursor or None,
        ),
    )
    filters = {"q": q or "", "framework": framework or "", "category": category or "", "tag": tag or ""}
    return render_list(
        request,
        "models.html",
        caller,
        "models",
        page,
        ModelOut.of,
        filters=filters,
        frameworks=KNOWN_FRAMEWORKS,
        feature_types=FEATURE_TYPES,
    )


def _input_schema(features: str) -> dict[str, Any]:
    """``name:type`` pairs, one per line or comma-separated, as a tabular input schema."""
    declared = []
    for position, item in enumerate(p.strip() for p in features.replace("\n", ",").split(",")):
        if not item:
            continue
        name, _, kind = item.partition(":")
        kind = (kind or "number").strip()
        if kind not in FEATURE_TYPES:
            raise InvalidInput(
                f"Feature {name.strip()!r} has an unknown type {kind!r}; "
                f"use one of {', '.join(FEATURE_TYPES)}.",
                errors=[FieldError(f"form.features[{position}]", "unknown type")],
            )
        declared.append({"name": name.strip(), "type": kind})
    return {"type": "tabular", "features": declared} if declared else {}


@router.post("/models", response_class=HTMLResponse)
def create_model(
    caller: UiCaller,
    c: ContainerDep,
    name: Annotated[str, Form(max_length=128)],
    framework: Annotated[str, Form(max_length=20)],
    description: Annotated[str, Form(max_length=10_000)] = "",
    category: Annotated[str, Form(max_length=100)] = "",
    tags: Annotated[str, Form(max_length=2000)] = "",
    features: Annotated[str, Form(max_length=20_000)] = "",
) -> Response:
    model = c.registry.create_model(
        caller,
        NewModel(
            name=name.strip(),
            framework=framework.strip(),
            description=description,
            category=category.strip() or None,
            tags=[t.strip() for t in tags.split(",") if t.strip()],
            input_schema=_input_schema(features),
        ),
    )
    return hx_redirect(f"{UI_PREFIX}/models/{model.name}")


def _feature_fields(model: dict[str, Any], version: dict[str, Any] | None) -> list[dict[str, Any]]:
    """The "try it" form's inputs: the model's declared features, else the version's own columns."""
    schema = model.get("inputSchema") or (version or {}).get("inputSchema") or {}
    fields = []
    for feature in schema.get("features") or []:
        if isinstance(feature, dict) and isinstance(feature.get("name"), str):
            fields.append(
                {
                    "name": feature["name"],
                    "type": feature.get("type", "number"),
                    "categories": feature.get("categories") or [],
                }
            )
    return fields


@router.get("/models/{model}", response_class=HTMLResponse)
def model_page(request: Request, model: str, caller: UiCaller, c: ContainerDep) -> HTMLResponse:
    found = c.registry.get_model(caller, model)
    wired = wire(ModelOut.of(found, c.versions.aliases(caller, found.id)))
    versions = [wire(VersionOut.of(v)) for v in c.versions.list_versions(caller, found.id, 100, None).items]
    versions.sort(key=lambda v: v["version"], reverse=True)
    metric_names = sorted({name for v in versions for name in v["metrics"]})
    by_version = dict(wired.get("aliases") or {})
    latest = versions[0] if versions else None
    return render(
        request,
        "model.html",
        caller,
        model=wired,
        versions=versions,
        metric_names=metric_names,
        aliases=by_version,
        fields=_feature_fields(wired, latest),
        stages=[s.value for s in Stage],
        export_formats=EXPORT_FORMATS.get(found.framework.value, ()),
        metrics_chart={
            "labels": [f"v{v['version']}" for v in reversed(versions)],
            "series": {name: [v["metrics"].get(name) for v in reversed(versions)] for name in metric_names},
        },
    )


@router.post("/models/{model}/versions", response_class=HTMLResponse)
async def upload_version(request: Request, model: str, caller: UiCaller, c: ContainerDep) -> Response:
    """The form posts ``file`` and ``metadata`` as the API's upload does, read by the same streaming code."""
    version = await receive_version(request, c.versions, caller, model)
    return hx_redirect(f"{UI_PREFIX}/models/{version.model_id}")


@router.post("/models/{model}/versions/{version}/stage", response_class=HTMLResponse)
def set_stage(
    model: str,
    version: int,
    caller: UiCaller,
    c: ContainerDep,
    stage: Annotated[Stage, Form()],
) -> Response:
    changed = c.versions.set_stage(caller, model, version, stage, False)
    return hx_redirect(f"{UI_PREFIX}/models/{changed.model_id}")


@router.get("/models/{model}/versions/{version}/export")
async def export_version(
    model: str,
    version: VersionNumber,
    caller: UiCaller,
    c: ContainerDep,
    format: Annotated[str, Query(max_length=20)] = "onnx",
) -> Response:
    """The API's edge bundle of the version, under ``/ui`` so that the cookie authenticates it."""
    return await export_routes.export_version(model, version, caller, c, format, None)


def _typed(field: dict[str, Any], raw: str) -> Any:
    kind, name = field["type"], field["name"]
    text = raw.strip()
    if text == "":
        return None
    try:
        if kind == "integer":
            return int(text)
        if kind == "number":
            number = float(text)
            if not math.isfinite(number):
                raise ValueError(text)
            return number
    except ValueError as exc:
        raise InvalidInput(
            f"{name} must be a {kind}.", errors=[FieldError(f"input.{name}", f"not a {kind}")]
        ) from exc
    if kind == "boolean":
        return text.lower() in ("true", "1", "yes", "on")
    return text


@router.post("/models/{model}/predict", response_class=HTMLResponse)
async def try_predict(request: Request, model: str, caller: UiCaller, c: ContainerDep) -> HTMLResponse:
    found = await run_in_threadpool(c.registry.get_model, caller, model)
    form = await request.form()
    version_text = str(form.get("version") or "").strip()
    version = int(version_text) if version_text.isdigit() else None
    latest = None
    if version is not None or not found.input_schema:
        listed = await run_in_threadpool(c.versions.list_versions, caller, found.id, 100, None)
        chosen = [v for v in listed.items if version is None or v.version == version]
        latest = wire(VersionOut.of(max(chosen, key=lambda v: v.version))) if chosen else None
    fields = _feature_fields(wire(ModelOut.of(found)), latest)
    if fields:
        payload: dict[str, Any] = {}
        for field in fields:
            value = _typed(field, str(form.get(f"f.{field['name']}") or ""))
            if value is not None:
                payload[field["name"]] = value
    else:
        raw = str(form.get("features") or "")
        try:
            payload = {"features": orjson.loads(raw)}
        except orjson.JSONDecodeError as exc:
            raise InvalidInput(
                "features must be a JSON array.", errors=[FieldError("input.features", "not JSON")]
            ) from exc
    result = await c.inference.predict(
        caller, found.id, payload, PredictOptions(include_confidence=True, version=version)
    )
    return render(request, "_prediction.html", caller, result=result)


# --- training jobs -------------------------------------------------------------------------------


@router.get("/jobs", response_class=HTMLResponse)
def jobs_page(
    request: Request,
    caller: UiCaller,
    c: ContainerDep,
    cursor: Cursor = None,
    kind: Annotated[Literal["training", "trial"] | None, Query()] = None,
) -> HTMLResponse:
    """Every job by default; ``kind`` keeps training jobs or AutoML trials."""
    page = c.training.list_jobs(caller, None, None, PAGE, cursor or None, kind=kind)
    return render_list(request, "jobs.html", caller, "jobs", page, JobOut.of, kind=kind or "")


@router.get("/jobs/{job}", response_class=HTMLResponse)
def job_page(request: Request, job: str, caller: UiCaller, c: ContainerDep) -> HTMLResponse:
    found = wire(JobOut.of(c.training.get(caller, job)))
    model = c.registry.get_model(caller, found["modelId"])
    return render(request, "job.html", caller, job=found, model_name=model.name)


@router.get("/jobs/{job}/events")
async def job_events(request: Request, job: str, caller: UiCaller, c: ContainerDep) -> Response:
    """The API's event stream of the job, under ``/ui`` so that the cookie authenticates it."""
    return await training_routes.job_events(job, request, caller, c, request.headers.get("last-event-id"))


# --- deployments, experiments, drift, audit ------------------------------------------------------


@router.get("/deployments", response_class=HTMLResponse)
def deployments_page(
    request: Request,
    caller: UiCaller,
    c: ContainerDep,
    cursor: Cursor = None,
) -> HTMLResponse:
    page = c.deployments.list(caller, DeploymentFilter(None, None, None, PAGE, cursor or None))
    return render_list(request, "deployments.html", caller, "deployments", page, DeploymentOut.of)


@router.get("/experiments", response_class=HTMLResponse)
def experiments_page(
    request: Request,
    caller: UiCaller,
    c: ContainerDep,
    cursor: Cursor = None,
) -> HTMLResponse:
    page = c.experiments.experiments.list(caller, ExperimentFilter(None, None, None, PAGE, cursor or None))
    return render_list(request, "experiments.html", caller, "experiments", page, ExperimentOut.of)


@router.get("/experiments/{experiment_id}", response_class=HTMLResponse)
def experiment_page(request: Request, experiment_id: str, caller: UiCaller, c: ContainerDep) -> HTMLResponse:
    experiment = wire(ExperimentOut.of(c.experiments.experiments.get(caller, experiment_id)))
    results = c.experiments.experiments.results(caller, experiment_id).to_dict()
    model = c.registry.get_model(caller, experiment["modelId"])
    arms = results.get("arms") or []
    chart = {
        "labels": [a.get("arm") for a in arms],
        "series": {
            "requests": [a.get("requests") for a in arms],
            "errors": [a.get("errors") for a in arms],
            "p95 latency (ms)": [(a.get("latencyMs") or {}).get("p95") for a in arms],
        },
    }
    return render(
        request,
        "experiment.html",
        caller,
        experiment=experiment,
        model_name=model.name,
        results=results,
        arms=arms,
        chart=chart,
    )


@router.get("/models/{model}/drift", response_class=HTMLResponse)
def drift_page(request: Request, model: str, caller: UiCaller, c: ContainerDep) -> HTMLResponse:
    found = c.registry.get_model(caller, model)
    _, page = c.monitoring.monitor.reports(caller, found.id, None, 20, None)
    reports = [wire(DriftReportOut.of(r)) for r in page.items]
    latest = reports[0] if reports else None
    chart = None
    if latest is not None:
        features = latest.get("features") or []
        chart = {
            "labels": [f.get("name") or f.get("feature") for f in features],
            "series": {"PSI": [f.get("score") for f in features]},
        }
    return render(request, "drift.html", caller, model=wire(ModelOut.of(found)), reports=reports, chart=chart)


@router.get("/audit", response_class=HTMLResponse)
def audit_page(
    request: Request,
    caller: UiCaller,
    c: ContainerDep,
    action: Annotated[str | None, Query(max_length=100)] = None,
    cursor: Cursor = None,
) -> HTMLResponse:
    page = c.audit.search(caller, AuditQuery(action=action or None, limit=50, cursor=cursor or None))
    return render_list(request, "audit.html", caller, "records", page, AuditRecordOut.of, action=action or "")
