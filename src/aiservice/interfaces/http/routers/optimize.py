"""``/models/{model}/versions/{version}/optimize``: quantise, prune or halve a version into a new one."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Response, status
from pydantic import Field
from starlette.concurrency import run_in_threadpool

from aiservice.application.optimization import OptimizationRequest
from aiservice.domain.errors import Unavailable
from aiservice.interfaces.http.deps import CallerDep, ContainerDep
from aiservice.interfaces.http.paths import API_PREFIX, VersionNumber
from aiservice.interfaces.http.schemas import ApiModel, VersionOut

router = APIRouter(prefix=API_PREFIX, tags=["optimization"])
MAX_ROWS = 10_000
MAX_WIDTH = 4_096

Row = Annotated[list[float], Field(min_length=1, max_length=MAX_WIDTH)]


class ValidationIn(ApiModel):
    rows: list[Row] = Field(min_length=1, max_length=MAX_ROWS, description="Numeric feature rows")
    labels: list[Any] = Field(
        min_length=1, max_length=MAX_ROWS, description="The true class (or value) of each row"
    )


class OptimizeIn(ApiModel):
    method: Literal["quantization", "pruning", "float16"]
    mode: Literal["dynamic", "static"] = Field(
        default="dynamic", description="quantization: dynamic INT8, or static INT8 calibrated on rows"
    )
    form: Literal["native", "onnx"] | None = Field(
        default=None,
        description="The form optimised: a torch model's own weights (native) or the version's ONNX "
        "compilation; other frameworks always use their ONNX compilation",
    )
    sparsity: float = Field(default=0.5, gt=0, lt=1, description="pruning: the share of weights zeroed")
    calibration_rows: list[Row] | None = Field(
        default=None, min_length=1, max_length=MAX_ROWS, description="static quantization's sample"
    )
    validation: ValidationIn
    max_accuracy_drop: float = Field(default=0.01, ge=0, le=1)
    target_model: str | None = Field(
        default=None,
        min_length=1,
        max_length=128,
        description="Where an ONNX result of a non-ONNX model goes (default <name>-onnx, created if needed)",
    )
    description: str = Field(default="", max_length=10_000)
    latency_calls: int = Field(default=100, ge=1, le=10_000)

    def to_request(self) -> OptimizationRequest:
        return OptimizationRequest(
            method=self.method,
            validation_rows=self.validation.rows,
            validation_labels=self.validation.labels,
            max_accuracy_drop=self.max_accuracy_drop,
            mode=self.mode,
            form=self.form,
            sparsity=self.sparsity,
            calibration_rows=self.calibration_rows,
            target_model=self.target_model,
            description=self.description,
            latency_calls=self.latency_calls,
        )


@router.post(
    "/models/{model}/versions/{version}/optimize",
    status_code=status.HTTP_201_CREATED,
    response_model=VersionOut,
    summary="Quantise, prune or halve a version into a new, measured version",
)
async def optimize_version(
    model: str,
    version: VersionNumber,
    body: OptimizeIn,
    caller: CallerDep,
    container: ContainerDep,
    response: Response,
) -> VersionOut:
    optimization = container.optimization
    if optimization is None:
        raise Unavailable("Model optimisation is not available in this process.")
    created = await run_in_threadpool(optimization.optimize, caller, model, version, body.to_request())
    response.headers["Location"] = f"{API_PREFIX}/models/{created.model_id}/versions/{created.version}"
    return VersionOut.of(created)
