"""The Open Inference Protocol (KServe v2, as spoken by Triton, KServe and MLServer) under ``/v2``.

Health and server metadata are open; every ``/v2/models/...`` call needs the same bearer token and
``X-Tenant-ID`` as the rest of the API, and another tenant's model is 404. What a tabular model takes is
in ``v2_inputs.py``. Classifiers give ``label`` (the outputSchema's class names) and ``probabilities``,
regressors ``predictions``, each in exactly the datatype the model's metadata lists, whichever form
serves; the response's ``parameters.form`` names that form. Errors are problem+json with an
``error`` member too, which is what Triton's clients read.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Coroutine
from typing import Any

import numpy as np
from fastapi import APIRouter, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.routing import APIRoute
from starlette.concurrency import run_in_threadpool
from starlette.responses import Response

from aiservice import __version__
from aiservice.application.ports import Prediction
from aiservice.application.serving.inputs import ServingModel, caller_labels
from aiservice.application.serving.results import PredictOptions
from aiservice.application.serving.routing import Route
from aiservice.bootstrap import Container
from aiservice.domain.errors import DomainError, FieldError, InvalidInput, PayloadTooLarge, Unavailable
from aiservice.domain.models import Model, ModelVersion
from aiservice.domain.schemas import ImageSchema, TabularSchema, TensorSchema, TextSchema
from aiservice.domain.tabular import TabularPlan
from aiservice.domain.tenancy import Principal
from aiservice.interfaces.http.deps import CallerDep, ContainerDep
from aiservice.interfaces.http.paths import VersionNumber
from aiservice.interfaces.http.problems import domain_problem
from aiservice.interfaces.http.routers.deployments import forward_v2
from aiservice.interfaces.http.v2_codec import (
    DTYPES,
    InferRequest,
    Output,
    datatype_of,
    encode_response,
    label_datatype,
    malformed,
    parse_request,
)
from aiservice.interfaces.http.v2_inputs import (
    ModelInputs,
    output_array,
    tabular_inputs,
    tensor_spec,
    to_batch,
)

MAX_INFER_BODY_BYTES = 64 * 1024**2
INLINE_PARSE_BYTES = 256 * 1024
INFER_PATH = re.compile(r"^/v2/models/[^/]+(/versions/[^/]+)?/infer$")
EXTENSIONS = ["binary_tensor_data"]
HEADER_LENGTH = "Inference-Header-Content-Length"


class _V2Route(APIRoute):
    """Renders errors, authentication ones included, as problems that also carry ``error``."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def route(request: Request) -> Response:
            try:
                return await handler(request)
            except DomainError as exc:
                return _problem(request, exc)
            except RequestValidationError as exc:
                errors = [
                    FieldError(".".join(map(str, e.get("loc", ()))), str(e.get("msg"))) for e in exc.errors()
                ]
                detail = f"The request has invalid fields: {', '.join(e.field for e in errors[:5])}."
                return _problem(request, InvalidInput(detail, errors=errors))

        return route


def _problem(request: Request, exc: DomainError) -> Response:
    """Triton's clients read the message from an ``error`` key: v2 problems carry one too."""
    return domain_problem(request, exc, extra={"error": exc.detail})


router = APIRouter(tags=["open inference protocol (v2)"], route_class=_V2Route)
_INFER_BODY: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "content": {
            "application/json": {"schema": {"type": "object", "description": "A v2 inference request"}},
            "application/octet-stream": {
                "schema": {"type": "string", "format": "binary"},
                "description": f"{HEADER_LENGTH} bytes of JSON, then the binary tensors",
            },
        },
    }
}


# -- server ------------------------------------------------------------------------------------


@router.get("/v2/health/live", summary="Liveness (no authentication)")
async def live() -> dict[str, bool]:
    return {"live": True}


@router.get("/v2/health/ready", summary="Readiness: 503 while the database or store is down")
def ready(c: ContainerDep) -> Response:
    healthy = c.health.detailed().healthy
    return JSONResponse({"ready": healthy}, status_code=200 if healthy else 503)


@router.get("/v2", summary="Server metadata (no authentication)")
async def server_metadata() -> dict[str, Any]:
    return {"name": "aiservice", "version": __version__, "extensions": EXTENSIONS}


# -- models ------------------------------------------------------------------------------------


@router.get("/v2/models/{name}", summary="Model metadata of the version a bare name serves")
async def model_metadata(name: str, caller: CallerDep, c: ContainerDep) -> dict[str, Any]:
    return await _metadata(c, caller, name, "")


@router.get("/v2/models/{name}/versions/{version}", summary="Model metadata of one version")
async def version_metadata(
    name: str, version: VersionNumber, caller: CallerDep, c: ContainerDep
) -> dict[str, Any]:
    return await _metadata(c, caller, name, f":{version}")


@router.get("/v2/models/{name}/ready", summary="Whether the model can serve")
async def model_ready(name: str, caller: CallerDep, c: ContainerDep) -> dict[str, Any]:
    return await _ready(c, caller, name, "")


@router.get("/v2/models/{name}/versions/{version}/ready", summary="Whether the version can serve")
async def version_ready(
    name: str, version: VersionNumber, caller: CallerDep, c: ContainerDep
) -> dict[str, Any]:
    return await _ready(c, caller, name, f":{version}")


@router.post("/v2/models/{name}/infer", summary="Inference", openapi_extra=_INFER_BODY)
async def model_infer(name: str, request: Request, caller: CallerDep, c: ContainerDep) -> Response:
    """``name`` is a deployment's name (tried first) or a model reference."""
    if await c.deployment_traffic.serves(caller, name):
        return await forward_v2(request, c, caller, name)
    return await _infer(c, caller, request, name, "")


@router.post("/v2/models/{name}/versions/{version}/infer", summary="Inference", openapi_extra=_INFER_BODY)
async def version_infer(
    name: str, version: VersionNumber, request: Request, caller: CallerDep, c: ContainerDep
) -> Response:
    return await _infer(c, caller, request, name, f":{version}")


async def _metadata(c: Container, caller: Principal, name: str, selector: str) -> dict[str, Any]:
    route = await c.inference.describe(caller, name, selector)
    model, version = route.model, route.version
    inputs = route.derived(V2_INPUTS, _inputs)
    parameters: dict[str, Any] = {
        "task": version.signature.task if version.signature else None,
        "form": route.form,
    }
    if inputs.features:
        parameters["feature_names"] = [f.name for f in inputs.features]
    return {
        "name": model.name,
        "versions": [str(version.version)],
        "platform": model.framework.value,
        "inputs": inputs.tensors,
        "outputs": route.derived(V2_OUTPUTS, _output_specs),
        "parameters": parameters,
    }


async def _ready(c: Container, caller: Principal, name: str, selector: str) -> dict[str, Any]:
    route = await c.inference.describe(caller, name, selector)
    model, version = route.model, route.version
    try:
        c.inference.require_runtime(model.framework)
    except Unavailable as exc:
        raise Unavailable(exc.detail, code=exc.code, extra={"name": model.name, "ready": False}) from exc
    loaded = c.inference.is_loaded(caller, model, version)
    return {
        "name": model.name,
        "ready": True,
        "parameters": {"version": str(version.version), "loaded": loaded},
    }


# -- inference ---------------------------------------------------------------------------------


async def _infer(c: Container, caller: Principal, request: Request, name: str, selector: str) -> Response:
    body, header_length = await _body(request), request.headers.get(HEADER_LENGTH)
    if len(body) > INLINE_PARSE_BYTES:  # decoding a big batch is CPU work: keep it off the event loop
        parsed = await run_in_threadpool(parse_request, body, header_length)
    else:
        parsed = parse_request(body, header_length)
    route = await c.inference.describe(caller, name, selector)
    traffic = c.inference.experiments  # a bare model's running experiment picks the arm
    assignment = None
    if traffic is not None and not selector:
        options = PredictOptions(headers=request.headers)
        keyed = _routing_inputs(traffic.routing_input(caller.tenant_id, route.model.id), parsed)
        assignment = traffic.assign(caller.tenant_id, route.model.id, name, options, keyed)
        if assignment is not None:
            route = await c.inference.describe(caller, name, assignment.selector)
    specs = route.derived(V2_OUTPUTS, _output_specs)
    if route.version.signature is not None:
        _check_requested(parsed, [o["name"] for o in specs])
    rows = to_batch(route.derived(V2_INPUTS, _inputs), parsed.inputs)
    started = time.perf_counter()
    try:
        serving, prediction = await c.inference.infer_array(caller, route, rows)
    except Exception:
        if traffic is not None and assignment is not None:
            traffic.failed(assignment, (time.perf_counter() - started) * 1000)
        raise
    produced = _outputs(c, serving, prediction, specs)
    _check_requested(parsed, list(produced))
    chosen = [(produced[o.name], parsed.binary(o)) for o in parsed.outputs] or [
        (output, parsed.binary(None)) for output in produced.values()
    ]
    parameters: dict[str, Any] = {"form": serving.form}
    header = {
        "model_name": serving.model.name,
        "model_version": str(serving.version.version),
        "id": parsed.id if parsed.id is not None else getattr(request.state, "request_id", ""),
        "parameters": parameters,
    }
    if traffic is not None and assignment is not None:
        predictions = c.inference.labels_for(serving, prediction.values)
        traffic.answered(assignment, len(rows), (time.perf_counter() - started) * 1000, predictions)
        parameters |= {"experiment": assignment.experiment_id, "arm": assignment.arm}
        if assignment.shadows:  # copies for the challengers, run once this answer is on its way
            traffic.shadow(assignment, lambda v, a: _shadow_predictions(c, caller, name, parsed, v, a))
    content, length = encode_response(header, chosen)
    if length is None:
        return Response(content, media_type="application/json")
    return Response(content, media_type="application/octet-stream", headers={HEADER_LENGTH: str(length)})


def _routing_inputs(key: str | None, parsed: InferRequest) -> tuple[dict[str, Any], ...]:
    """The experiment's routing key as ``assign`` reads an input field: the first element (the first
    row) of the input tensor it names; nothing when it keys on a header or the tensor is absent."""
    tensor = next((t for t in parsed.inputs if t.name == key), None) if key is not None else None
    if tensor is None or tensor.array.size == 0:
        return ()
    first = tensor.array[0] if tensor.array.ndim else tensor.array
    return ({tensor.name: first.tolist() if isinstance(first, np.ndarray | np.generic) else first},)


async def _shadow_predictions(
    c: Container, caller: Principal, name: str, parsed: InferRequest, version: int | None, alias: str | None
) -> list[Any]:
    """A shadow arm's answer to the same tensors (shaped for its own version), as labels or values;
    not written to the payload log."""
    route = await c.inference.describe(caller, name, f":{version}" if version is not None else f"@{alias}")
    rows = to_batch(route.derived(V2_INPUTS, _inputs), parsed.inputs)
    serving, prediction = await c.inference.infer_array(caller, route, rows, observe=False)
    return c.inference.labels_for(serving, prediction.values)


async def _body(request: Request) -> bytearray:
    """The whole body, bounded: the body limit middleware only checks a declared length here."""
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_INFER_BODY_BYTES:
            raise PayloadTooLarge(
                f"The request body is larger than this route's limit of {MAX_INFER_BODY_BYTES} bytes.",
                extra={"limit": MAX_INFER_BODY_BYTES},
            )
    return body


def _check_requested(parsed: InferRequest, available: list[str]) -> None:
    for i, output in enumerate(parsed.outputs):
        if output.name not in available:
            raise malformed(
                f"outputs.{i}.name",
                f"unknown output {output.name!r}; this model gives {', '.join(available)}",
            )


# What a resolved version takes and gives over v2, derived once per resolution (``Route.derived``).
V2_INPUTS = "v2.inputs"
V2_OUTPUTS = "v2.outputs"


def _inputs(route: Route) -> ModelInputs:
    schema, version = route.input_schema, route.version
    signature = version.signature
    if isinstance(schema, TabularSchema):
        return tabular_inputs(TabularPlan.bind(schema, signature, version.version))
    if isinstance(schema, TensorSchema):
        return ModelInputs([tensor_spec(schema.name, datatype_of(schema.dtype), [-1, *schema.shape])])
    if isinstance(schema, TextSchema):
        return ModelInputs([tensor_spec(schema.name, "BYTES", [-1])], text_limit=schema.max_length)
    if isinstance(schema, ImageSchema):
        return ModelInputs(
            [tensor_spec(schema.name, "BYTES", [-1])],
            unsupported="Image inputs are not served over v2 yet; use /predict.",
        )
    if signature is None or not signature.inputs:
        return ModelInputs([tensor_spec("input", "FP32", [-1, -1])])
    tensors = [tensor_spec(t.name, datatype_of(t.dtype), list(t.shape)) for t in signature.inputs]
    if len(tensors) > 1:
        return ModelInputs(
            tensors, unsupported="Models with several unnamed input tensors are not served over v2 yet."
        )
    return ModelInputs(tensors)


# -- outputs -----------------------------------------------------------------------------------


def output_specs(model: Model, version: ModelVersion) -> list[dict[str, Any]]:
    """The outputs a version gives, as its metadata lists them; ``/infer`` answers exactly these
    datatypes, whichever form (native or ONNX) serves."""
    signature = version.signature
    if signature is None:
        return []
    first = signature.outputs[0] if signature.outputs else None
    if signature.task == "classification":
        labels = caller_labels(model, version, signature)
        specs = [tensor_spec("label", label_datatype(labels) if labels else "INT64", [-1])]
        proba = next((o for o in signature.outputs if len(o.shape) == 2), None)
        if proba is not None:
            width = len(signature.classes) if signature.classes else proba.shape[1]
            specs.append(tensor_spec("probabilities", datatype_of(proba.dtype), [-1, width]))
        return specs
    if signature.task == "regression":
        return [tensor_spec("predictions", datatype_of(first.dtype) if first else "FP64", [-1])]
    return [tensor_spec(first.name, datatype_of(first.dtype), list(first.shape))] if first else []


def _output_specs(route: Route) -> list[dict[str, Any]]:
    return output_specs(route.model, route.version)


def _outputs(
    c: Container, serving: ServingModel, prediction: Prediction, specs: list[dict[str, Any]]
) -> dict[str, Output]:
    values, probabilities = prediction.values, prediction.probabilities
    outputs: dict[str, Output] = {}
    for spec in specs or _native_specs(serving, prediction):
        name, datatype = spec["name"], spec["datatype"]
        if name == "label":
            array = _labels(c, serving, values, datatype)
        elif name == "probabilities":
            if probabilities is None:
                continue
            array = output_array(datatype, probabilities)
        else:
            array = output_array(datatype, values)
        outputs[name] = Output(name, datatype, array)
    return outputs


def _native_specs(serving: ServingModel, prediction: Prediction) -> list[dict[str, Any]]:
    """A version stored without a signature: its outputs as the model gives them."""
    name = serving.loaded.signature.outputs[0].name if serving.loaded.signature.outputs else "output"
    return [tensor_spec(name, datatype_of(prediction.values.dtype), [-1])]


def _labels(c: Container, serving: ServingModel, values: np.ndarray, datatype: str) -> np.ndarray:
    """Caller-facing labels, mapped once per distinct class rather than once per row."""
    try:
        distinct, inverse = np.unique(values, return_inverse=True)
    except TypeError:  # labels numpy cannot order
        distinct, inverse = values.reshape(-1), np.arange(values.size)
    mapped = c.inference.labels_for(serving, distinct)
    table = np.empty(len(mapped), dtype=DTYPES[datatype].newbyteorder("="))
    for i, label in enumerate(mapped):
        table[i] = label
    return table[inverse.reshape(-1)].reshape(values.shape)
