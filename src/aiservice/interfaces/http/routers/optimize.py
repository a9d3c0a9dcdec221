"""``/models/{model}/versions/{version}/optimize``: quantise, prune or halve a version into a new one."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Response, status
from pydantic import Field, model_validator
from starlette.concurrency import run_in_threadpool

from aiservice.application.optimization import (
    DEFAULT_SAMPLE,
    MAX_SAMPLE,
    DatasetSample,
    OptimizationRequest,
)
from aiservice.domain.errors import Unavailable
from aiservice.domain.training import DatasetConfig, format_of
from aiservice.interfaces.http.deps import CallerDep, ContainerDep
from aiservice.interfaces.http.paths import API_PREFIX, VersionNumber
from aiservice.interfaces.http.schemas import ApiModel, VersionOut

router = APIRouter(prefix=API_PREFIX, tags=["optimization"])
MAX_ROWS = 10_000
MAX_WIDTH = 4_096

Row = Annotated[list[float], Field(min_length=1, max_length=MAX_WIDTH)]


class SampleDatasetIn(ApiModel):
    train_path: str = Field(
        min_length=1,
        max_length=2000,
        description="dataset://NAME (uploaded by this tenant), a path under DATASET_ROOTS, file://... or "
        "s3://bucket/key: a csv or parquet file, or a folder of them",
    )
    format: Literal["csv", "parquet"] | None = Field(
        default=None, description="Without one, told from trainPath's extension or a folder's files"
    )
    target: str | None = Field(
        default=None,
        min_length=1,
        max_length=200,
        description="The label column (validation); chosen as for training when left out",
    )
    features: list[str] | None = Field(
        default=None,
        min_length=1,
        max_length=MAX_WIDTH,
        description="The feature columns, in the order the model takes them; default the version's "
        "input schema's, else every column but the target",
    )

    def to_domain(self) -> DatasetConfig:
        return DatasetConfig(
            train_path=self.train_path,
            format=self.format or format_of(self.train_path) or "",
            target=self.target,
            features=self.features,
        )


class DatasetSampleIn(ApiModel):
    dataset_config: SampleDatasetIn
    sample: int = Field(
        default=DEFAULT_SAMPLE,
        ge=1,
        le=MAX_SAMPLE,
        description="Rows of a seeded uniform sample (every row when the dataset holds fewer)",
    )

    def to_domain(self) -> DatasetSample:
        return DatasetSample(self.dataset_config.to_domain(), self.sample)


class ValidationIn(ApiModel):
    """Inline ``rows`` and ``labels``, or a ``datasetConfig`` (and ``sample``) to read them from."""

    rows: list[Row] | None = Field(
        default=None, min_length=1, max_length=MAX_ROWS, description="Numeric feature rows"
    )
    labels: list[Any] | None = Field(
        default=None, min_length=1, max_length=MAX_ROWS, description="The true class (or value) of each row"
    )
    dataset_config: SampleDatasetIn | None = Field(
        default=None, description="A dataset to sample the rows and labels from, instead of rows"
    )
    sample: int | None = Field(
        default=None,
        ge=1,
        le=MAX_SAMPLE,
        description=f"With datasetConfig: rows of a seeded uniform sample (default {DEFAULT_SAMPLE})",
    )

    @model_validator(mode="after")
    def _one_form(self) -> ValidationIn:
        inline = self.rows is not None or self.labels is not None
        if inline and (self.dataset_config is not None or self.sample is not None):
            raise ValueError("send rows and labels, or a datasetConfig, not both")
        if not inline and self.dataset_config is None:
            raise ValueError("send rows and labels, or a datasetConfig to read them from")
        if inline and (self.rows is None or self.labels is None):
            raise ValueError("inline validation needs both rows and labels")
        return self

    def dataset(self) -> DatasetSample | None:
        if self.dataset_config is None:
            return None
        return DatasetSample(self.dataset_config.to_domain(), self.sample or DEFAULT_SAMPLE)


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
    calibration: DatasetSampleIn | None = Field(
        default=None,
        description="static quantization's sample read from a dataset (features only), instead of "
        "calibrationRows; with neither, the validation sample",
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
            validation_rows=self.validation.rows or [],
            validation_labels=self.validation.labels or [],
            validation_dataset=self.validation.dataset(),
            max_accuracy_drop=self.max_accuracy_drop,
            mode=self.mode,
            form=self.form,
            sparsity=self.sparsity,
            calibration_rows=self.calibration_rows,
            calibration_dataset=None if self.calibration is None else self.calibration.to_domain(),
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
