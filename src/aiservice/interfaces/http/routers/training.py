"""``/models/{model}/train`` and ``/training-jobs``: submit, look at, follow (SSE) and cancel jobs."""

from __future__ import annotations

import asyncio
import math
from collections.abc import AsyncIterator
from dataclasses import replace
from datetime import datetime
from typing import Annotated, Any, Literal

import orjson
from fastapi import APIRouter, Header, Query, Request, Response, status
from fastapi.responses import StreamingResponse
from pydantic import Field, field_validator
from starlette.concurrency import run_in_threadpool

from aiservice.application.training import TrainingRequest
from aiservice.domain.clock import utcnow
from aiservice.domain.quantities import cpu_millicores, memory_bytes
from aiservice.domain.training import (
    DatasetConfig,
    GpuPolicy,
    JobStatus,
    ResourceConfig,
    TrainingConfig,
    TrainingJob,
    format_of,
)
from aiservice.interfaces.http.deps import CallerDep, ContainerDep, PageCursor, PageLimit
from aiservice.interfaces.http.event_streams import resume_after
from aiservice.interfaces.http.paths import API_PREFIX
from aiservice.interfaces.http.schemas import ApiModel, PageOut

router = APIRouter(prefix=API_PREFIX, tags=["training"])
JOBS = f"{API_PREFIX}/training-jobs"
SSE_POLL_S = 0.25
SSE_KEEPALIVE_S = 15.0


class TrainingConfigIn(ApiModel):
    algorithm: str | None = Field(
        default=None,
        min_length=1,
        max_length=200,
        description="sklearn: a dotted estimator name (sklearn.ensemble.RandomForestClassifier); "
        "xgboost: XGBClassifier or XGBRegressor; lightgbm: LGBMClassifier or LGBMRegressor; pytorch "
        "and keras: mlp or cnn. Without one, the framework's default for the model's task (a random "
        "forest, a gradient-boosted model, an MLP or for images a CNN), named in the job",
        examples=["sklearn.ensemble.RandomForestClassifier"],
    )
    params: dict[str, Any] = Field(default_factory=dict, description="The algorithm's hyper-parameters")
    epochs: int = Field(default=10, ge=1, le=100_000)
    batch_size: int = Field(default=32, ge=1, le=1_000_000)
    learning_rate: float = Field(default=1e-3, gt=0, le=100)
    seed: int = Field(default=0, ge=0, le=2**31 - 1)

    def to_domain(self) -> TrainingConfig:
        return TrainingConfig(
            algorithm=self.algorithm or "",
            params=self.params,
            epochs=self.epochs,
            batch_size=self.batch_size,
            learning_rate=self.learning_rate,
            seed=self.seed,
        )


class DatasetConfigIn(ApiModel):
    train_path: str = Field(
        min_length=1,
        max_length=2000,
        description="A path under DATASET_ROOTS, file://..., dataset://NAME (uploaded) or s3://bucket/key",
    )
    validation_path: str | None = Field(default=None, min_length=1, max_length=2000)
    test_path: str | None = Field(default=None, min_length=1, max_length=2000)
    format: Literal["csv", "parquet", "npz", "imagefolder"] | None = Field(
        default=None,
        description="Without one, told from trainPath's extension (.csv, .parquet or .pq, .npz)",
    )
    target: str | None = Field(default=None, min_length=1, max_length=200, description="The label column")
    features: list[str] | None = Field(default=None, min_length=1, max_length=10_000)
    validation_split: float | None = Field(
        default=None, gt=0, lt=1, description="Held out for validation when there is no validationPath"
    )

    def to_domain(self) -> DatasetConfig:
        return DatasetConfig(
            train_path=self.train_path,
            validation_path=self.validation_path,
            test_path=self.test_path,
            format=self.format or format_of(self.train_path) or "",
            target=self.target,
            features=self.features,
            validation_split=self.validation_split,
        )


class ResourceConfigIn(ApiModel):
    gpu: bool | Literal["required", "preferred"] = Field(
        default=False,
        description="true: use CUDA when present, else the CPU; required: fail without a GPU",
    )
    memory: int | str | None = Field(
        default=None,
        description='Memory limit, past which the job is stopped: a Kubernetes quantity ("8Gi", '
        '"512Mi") or a number of MB; at least 64 MB',
        examples=["8Gi"],
    )
    cpu: float | str | None = Field(
        default=None,
        description="CPUs for the framework's threads: a number of cores or a Kubernetes quantity "
        '("4", "500m"); at most 1024',
        examples=["4"],
    )
    timeout_seconds: int | None = Field(default=None, ge=1)
    workers: int = Field(
        default=1,
        ge=1,
        le=1024,
        description="Data-parallel workers (PyTorch on the Ray runner, Ray Train's TorchTrainer); "
        "each gets `cpu` CPUs and, with `gpu`, one GPU",
    )

    @field_validator("memory")
    @classmethod
    def _memory_mb(cls, value: int | str | None) -> int | None:
        if value is None:
            return None
        mb = value if isinstance(value, int) else math.ceil(memory_bytes(value) / 2**20)
        if mb < 64:
            raise ValueError(f"must be at least 64 MB (64Mi); {value!r} is {mb} MB")
        return mb

    @field_validator("cpu")
    @classmethod
    def _cores(cls, value: float | str | None) -> float | None:
        if value is None:
            return None
        cores = cpu_millicores(value) / 1000
        if cores > 1024:
            raise ValueError(f"must be at most 1024 CPUs; {value!r} is {cores:g}")
        return cores

    def to_domain(self) -> ResourceConfig:
        assert self.memory is None or isinstance(self.memory, int)
        assert self.cpu is None or isinstance(self.cpu, float)
        gpu = (
            GpuPolicy.REQUIRED
            if self.gpu == "required"
            else GpuPolicy.PREFERRED
            if self.gpu is True or self.gpu == "preferred"
            else GpuPolicy.NONE
        )
        return ResourceConfig(
            gpu=gpu,
            memory_mb=self.memory,
            cpu=self.cpu,
            timeout_seconds=self.timeout_seconds,
            workers=self.workers,
        )


class TrainRequestIn(ApiModel):
    training_config: TrainingConfigIn
    dataset_config: DatasetConfigIn
    resource_config: ResourceConfigIn = Field(default_factory=ResourceConfigIn)


class JobErrorOut(ApiModel):
    stage: str
    message: str


class JobOut(ApiModel):
    id: str
    model_id: str
    status: JobStatus
    progress: float = Field(description="0 to 1")
    epoch: int | None
    epochs: int | None
    step: int | None
    steps: int | None
    metrics: dict[str, Any] = Field(description="The latest reported metrics; on success, the evaluation")
    history: list[dict[str, Any]] = Field(description="One entry per finished epoch")
    eta_seconds: float | None
    error: JobErrorOut | None
    version: int | None = Field(description="The version the job registered, once it succeeded")
    device: str | None
    device_chosen_because: str | None = Field(
        default=None, description="Why the job runs on that device, when a GPU was preferred"
    )
    training_config: dict[str, Any]
    dataset_config: dict[str, Any]
    label_mapping: dict[str, Any] | None = Field(
        description="How the target's values are read, decided at submission: null when they are the "
        'model\'s declared classes; {"kind": "position", "values": {"0": "setosa", ...}} when they are '
        "the integers 0..K-1 and the model declares K class names: read as those classes by position"
    )
    resource_config: dict[str, Any]
    dataset_fingerprint: list[dict[str, Any]]
    created_by: str | None
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    updated_at: datetime | None
    links: dict[str, str]

    @classmethod
    def of(cls, job: TrainingJob) -> JobOut:
        links = {
            "self": f"{JOBS}/{job.id}",
            "events": f"{JOBS}/{job.id}/events",
            "cancel": f"{JOBS}/{job.id}/cancel",
            "model": f"{API_PREFIX}/models/{job.model_id}",
        }
        if job.version is not None:
            links["version"] = f"{API_PREFIX}/models/{job.model_id}/versions/{job.version}"
        return cls(
            id=job.id,
            model_id=job.model_id,
            status=job.status,
            progress=job.progress,
            epoch=job.epoch,
            epochs=job.epochs,
            step=job.step,
            steps=job.steps,
            metrics=job.metrics,
            history=job.history,
            eta_seconds=job.eta_seconds(utcnow()),
            error=JobErrorOut(stage=job.failure.stage, message=job.failure.message) if job.failure else None,
            version=job.version,
            device=job.device,
            device_chosen_because=job.device_chosen_because(),
            training_config=job.training.to_json(),
            dataset_config=replace(job.dataset, label_mapping=None).to_json(),  # as the user sent it
            label_mapping=job.dataset.label_mapping.to_json() if job.dataset.label_mapping else None,
            resource_config=job.resources.to_json(),
            dataset_fingerprint=job.dataset_fingerprint,
            created_by=job.created_by,
            created_at=job.created_at,
            started_at=job.started_at,
            finished_at=job.finished_at,
            updated_at=job.updated_at,
            links=links,
        )


@router.post(
    "/models/{model}/train",
    status_code=status.HTTP_202_ACCEPTED,
    response_model=JobOut,
    summary="Queue a training job that registers a new version",
)
def train(model: str, body: TrainRequestIn, caller: CallerDep, c: ContainerDep, response: Response) -> JobOut:
    job = c.training.submit(
        caller,
        model,
        TrainingRequest(
            training=body.training_config.to_domain(),
            dataset=body.dataset_config.to_domain(),
            resources=body.resource_config.to_domain(),
        ),
    )
    response.headers["Location"] = f"{JOBS}/{job.id}"
    return JobOut.of(job)


@router.get("/training-jobs", response_model=PageOut[JobOut])
def list_jobs(
    caller: CallerDep,
    c: ContainerDep,
    model_id: Annotated[
        str | None, Query(alias="modelId", max_length=128, description="A model id or name")
    ] = None,
    job_status: Annotated[JobStatus | None, Query(alias="status")] = None,
    kind: Annotated[
        Literal["training", "trial"] | None,
        Query(description="training: jobs that train a version; trial: AutoML trials; default both"),
    ] = None,
    automl_study: Annotated[
        str | None,
        Query(alias="automlStudy", max_length=36, description="Only this AutoML study's trial jobs"),
    ] = None,
    limit: PageLimit = 50,
    cursor: PageCursor = None,
) -> PageOut[JobOut]:
    page = c.training.list_jobs(caller, model_id, job_status, limit, cursor, kind=kind, study_id=automl_study)
    return PageOut[JobOut](items=[JobOut.of(j) for j in page.items], next_cursor=page.next_cursor)


@router.get("/training-jobs/{job}", response_model=JobOut)
def get_job(job: str, caller: CallerDep, c: ContainerDep) -> JobOut:
    return JobOut.of(c.training.get(caller, job))


@router.post("/training-jobs/{job}/cancel", response_model=JobOut)
def cancel_job(job: str, caller: CallerDep, c: ContainerDep) -> JobOut:
    return JobOut.of(c.training.cancel(caller, job))


@router.get(
    "/training-jobs/{job}/events",
    response_class=StreamingResponse,
    responses={200: {"content": {"text/event-stream": {}}, "description": "Server-Sent Events"}},
    summary="Follow a job: progress, metrics and status changes as Server-Sent Events",
)
async def job_events(
    job: str,
    request: Request,
    caller: CallerDep,
    c: ContainerDep,
    last_event_id: Annotated[
        str | None, Header(alias="Last-Event-ID", description="Resume after this event number")
    ] = None,
) -> StreamingResponse:
    """Each event has an ``id`` (its number in the job), an ``event`` (status or progress) and JSON
    ``data``. The stream ends after the job's final status event; reconnecting with ``Last-Event-ID``
    resumes after that event."""
    after = resume_after(last_event_id)
    jobs = c.training
    events, _ = await run_in_threadpool(jobs.events, caller, job, after)  # 404 before the stream starts

    async def stream() -> AsyncIterator[bytes]:
        nonlocal events, after
        quiet = 0.0
        while True:
            for event in events:
                after = event.seq
                payload = orjson.dumps(
                    {**event.data, "jobId": event.job_id, "at": event.created_at.isoformat()}
                )
                yield b"id: %d\nevent: %s\ndata: %s\n\n" % (event.seq, event.type.encode(), payload)
                quiet = 0.0
                if event.type == "status" and JobStatus(event.data["status"]).finished:
                    return
            if await request.is_disconnected():
                return
            await asyncio.sleep(SSE_POLL_S)
            quiet += SSE_POLL_S
            if quiet >= SSE_KEEPALIVE_S:  # a comment line keeps proxies from closing an idle stream
                quiet = 0.0
                yield b": keep-alive\n\n"
            events, current = await run_in_threadpool(jobs.events, caller, job, after)
            if not events and current.status.finished:
                return

    return StreamingResponse(
        stream(),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )
