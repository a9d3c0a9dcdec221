"""``/models/{model}/predict``, ``/batch-predict`` and warming or freeing a version in the cache."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import orjson
from fastapi import APIRouter, FastAPI, Request, Response, status
from fastapi.exceptions import RequestValidationError
from fastapi.routing import APIRoute
from pydantic import Field, ValidationError

from aiservice.application.inference import PredictionResult, PredictOptions
from aiservice.domain.errors import DomainError, PayloadTooLarge
from aiservice.domain.models import MAX_VERSION
from aiservice.interfaces.http.deps import CallerDep, ContainerDep, authenticate, inference_of
from aiservice.interfaces.http.middleware import DirectRoute, ParsedBodyRoute
from aiservice.interfaces.http.paths import API_PREFIX, VersionNumber
from aiservice.interfaces.http.problems import PROBLEM_BASE, status_of
from aiservice.interfaces.http.schemas import ApiModel

# The batch's body is the document the body middleware read, not a second parse (ParsedBodyRoute).
router = APIRouter(prefix=f"{API_PREFIX}/models", tags=["predictions"], route_class=ParsedBodyRoute)


class PredictOptionsIn(ApiModel):
    include_confidence: bool = False
    include_feature_importance: bool = False
    version: int | None = Field(
        default=None, ge=1, le=MAX_VERSION, description="Pin a version (default: production, else latest)"
    )
    alias: str | None = Field(default=None, max_length=64, description="Pin an alias or a stage name")

    def to_options(self) -> PredictOptions:
        return PredictOptions(
            include_confidence=self.include_confidence,
            include_feature_importance=self.include_feature_importance,
            version=self.version,
            alias=self.alias,
        )


class BatchOptionsIn(PredictOptionsIn):
    batch_size: int | None = Field(
        default=None, ge=1, description="Rows per model call (default: all at once)"
    )
    parallel: bool = True
    fail_fast: bool = False


class PredictRequest(ApiModel):
    input: dict[str, Any] = Field(
        description='Keyed by the input schema\'s names, e.g. {"age": 42, "plan": "pro"}; '
        'a model without declared features takes {"features": [...]}'
    )
    options: PredictOptionsIn = Field(default_factory=PredictOptionsIn)


class BatchPredictRequest(ApiModel):
    inputs: list[Any] = Field(min_length=1)
    options: BatchOptionsIn = Field(default_factory=BatchOptionsIn)


class PredictResponse(ApiModel):
    prediction: Any
    confidence: float | None = None
    probabilities: dict[str, float] | None = None
    feature_importance: dict[str, Any] | None = None
    model_id: str
    version: int
    form: str = Field(description="The form of the version that answered: native, or onnx (compiled)")
    latency_ms: float
    request_id: str | None = None
    experiment: dict[str, str] | None = Field(
        default=None, description='The experiment that routed the call and its arm: {"id", "arm"}'
    )


class BatchPredictResponse(ApiModel):
    outputs: list[dict[str, Any]] = Field(
        description='One prediction or {"error": problem} per input, in order'
    )


def _response(result: PredictionResult, request_id: str | None) -> dict[str, Any]:
    body: dict[str, Any] = {
        "prediction": result.prediction,
        "modelId": result.model_id,
        "version": result.version,
        "form": result.form,
        "latencyMs": result.latency_ms,
        "requestId": request_id,
    }
    if result.confidence is not None:
        body["confidence"] = result.confidence
        body["probabilities"] = result.probabilities
    if result.feature_importance is not None:
        body["featureImportance"] = result.feature_importance
    if result.experiment is not None:
        body["experiment"] = result.experiment
    return body


def _problem(error: DomainError) -> dict[str, Any]:
    problem: dict[str, Any] = {
        "type": PROBLEM_BASE + error.code,
        "title": error.title,
        "status": status_of(error),
        "detail": error.detail,
    }
    if error.errors:
        problem["errors"] = [{"field": e.field, "message": e.message} for e in error.errors]
    return problem


def _inlined(schema: dict[str, Any]) -> dict[str, Any]:
    """A JSON schema with its ``$defs`` substituted in place, so it stands alone inside OpenAPI."""
    definitions = schema.pop("$defs", {})

    def walk(node: Any) -> Any:
        if isinstance(node, dict):
            ref = node.get("$ref", "")
            if ref.startswith("#/$defs/"):
                return walk(definitions[ref.removeprefix("#/$defs/")])
            return {key: walk(value) for key, value in node.items()}
        if isinstance(node, list):
            return [walk(item) for item in node]
        return node

    inlined: dict[str, Any] = walk(schema)
    return inlined


_PREDICT_DOCS: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "content": {
            "application/json": {"schema": _inlined(PredictRequest.model_json_schema(by_alias=True))}
        },
    },
    "security": [{"HTTPBearer": []}, {"ApiKey": []}],
    "parameters": [
        {
            "name": "X-Tenant-ID",
            "in": "header",
            "required": False,
            "schema": {"type": "string"},
            "description": "Must equal the credential's tenant (optional with an API key).",
        }
    ],
}


async def predict(model: str, request: Request) -> Response:
    """The hottest route, kept free of per-request dependency solving: the caller is authenticated
    and the body parsed (in Rust, by pydantic-core) here, with the same checks and problems."""
    caller = await authenticate(request)
    try:
        body = PredictRequest.model_validate_json(await request.body())
    except ValidationError as exc:
        raise RequestValidationError([{**e, "loc": ("body", *e["loc"])} for e in exc.errors()]) from None
    options = replace(body.options.to_options(), headers=request.headers)  # an experiment's routing key
    result = await inference_of(request).predict(caller, model, body.input, options)
    # Serialised directly: the response model documents the shape without re-validating every answer.
    body_out = _response(result, getattr(request.state, "request_id", None))
    return Response(orjson.dumps(body_out), media_type="application/json")


def add_hot_routes(app: FastAPI) -> APIRoute:
    """The single-row prediction, added to the app itself ahead of every router: it is matched first
    and in one step, where a route of an included router takes three (the router's own matching).
    Most calls do not even reach it (``PredictLane``); the route it returns is the one they are named by."""
    app.router.add_api_route(
        f"{API_PREFIX}/models/{{model}}/predict",
        predict,
        methods=["POST"],
        response_model=PredictResponse,
        response_model_exclude_none=True,
        openapi_extra=_PREDICT_DOCS,
        route_class_override=DirectRoute,
        tags=["predictions"],
    )
    route = app.router.routes[-1]
    assert isinstance(route, APIRoute)
    return route


@router.post("/{model}/batch-predict", response_model=BatchPredictResponse)
async def batch_predict(
    model: str, body: BatchPredictRequest, request: Request, caller: CallerDep
) -> Response:
    inference = inference_of(request)
    limit = inference.max_batch_size
    if len(body.inputs) > limit:
        raise PayloadTooLarge(
            f"A batch may hold at most {limit} inputs (MAX_BATCH_SIZE); this one holds {len(body.inputs)}.",
            extra={"limit": limit},
        )
    options = body.options
    results = await inference.predict_many(
        caller,
        model,
        body.inputs,
        replace(options.to_options(), headers=request.headers),
        fail_fast=options.fail_fast,
        chunk=options.batch_size if options.parallel else None,
    )
    request_id = getattr(request.state, "request_id", None)
    outputs = [
        {"error": _problem(r)} if isinstance(r, DomainError) else _response(r, request_id) for r in results
    ]
    return Response(orjson.dumps({"outputs": outputs}), media_type="application/json")


@router.post("/{model}/versions/{version}/load", summary="Load a version into the model cache")
async def load(model: str, version: VersionNumber, caller: CallerDep, c: ContainerDep) -> dict[str, Any]:
    """Loads the version in every worker process of the answering replica; ``workers`` says how each
    one fared (``memoryBytes`` is the answering worker's)."""
    serving, memory, workers = await c.fleet.load(caller, model, version)
    return {
        "modelId": serving.model.id,
        "version": serving.version.version,
        "loaded": True,
        "memoryBytes": memory,
        "form": serving.version.serving.form,
        "signature": serving.loaded.signature.to_json(),
        "workers": [w.to_json() for w in workers],
    }


@router.post(
    "/{model}/versions/{version}/unload",
    status_code=status.HTTP_204_NO_CONTENT,
    summary="Free a version from the model cache",
)
async def unload(model: str, version: VersionNumber, caller: CallerDep, c: ContainerDep) -> Response:
    """Frees the version in every worker process of the answering replica."""
    await c.fleet.unload(caller, model, version)
    return Response(status_code=status.HTTP_204_NO_CONTENT)
