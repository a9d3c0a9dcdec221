"""``/models/{model}/deploy`` and ``/deployments``: named endpoints, their rollouts and their traffic."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request, Response, status
from pydantic import Field

from aiservice.application.deploying.deployments import DeploymentChanges, DeploymentFilter, NewDeployment
from aiservice.application.deploying.experiment_pools import arm_targets
from aiservice.application.events import event_type_of
from aiservice.domain.deployments import (
    Deployment,
    DeploymentStatus,
    DeploymentTarget,
    Environment,
    ReplicaLoad,
    Revision,
)
from aiservice.domain.models import Model
from aiservice.interfaces.http.deps import (
    CallerDep,
    ContainerDep,
    PageCursor,
    PageLimit,
    authenticate,
    container_of,
)
from aiservice.interfaces.http.paths import API_PREFIX
from aiservice.interfaces.http.schemas import ApiModel, PageOut

router = APIRouter(prefix=API_PREFIX, tags=["deployments"])


class ResourceLimitsIn(ApiModel):
    cpu: str | float | None = Field(default=None, description='Per replica: "2", "500m" or cores')
    memory: str | None = Field(default=None, description='Per replica: "4Gi", "512Mi"')


class AutoscalingIn(ApiModel):
    enabled: bool = True
    target_cpu_utilization: float | None = Field(
        default=None, alias="targetCPUUtilization", description="Percent of a replica's CPU (1-100)"
    )
    target_concurrency: float | None = Field(default=None, description="In-flight requests per replica")
    target_latency_ms: float | None = Field(default=None, description="p95 latency in milliseconds")
    cooldown_seconds: float | None = Field(default=None, description="Between two scaling changes")

    def raw(self) -> dict[str, Any]:
        return self.model_dump(by_alias=True, exclude_none=True)


class DeployIn(ApiModel):
    deployment_name: str = Field(min_length=1, max_length=63, examples=["my-classifier-prod"])
    environment: Environment = Environment.PRODUCTION
    target: DeploymentTarget = DeploymentTarget.LOCAL
    version: int | None = Field(default=None, ge=1, description="Default: the version in production")
    alias: str | None = Field(default=None, min_length=1, max_length=64)
    min_replicas: int = Field(default=1, ge=0, le=100)
    max_replicas: int | None = Field(default=None, ge=1, le=100)
    resource_limits: ResourceLimitsIn | None = None
    autoscaling: AutoscalingIn | None = None

    def to_domain(self) -> NewDeployment:
        return NewDeployment(
            name=self.deployment_name,
            environment=self.environment,
            target=self.target,
            min_replicas=self.min_replicas,
            max_replicas=self.max_replicas,
            resource_limits=self.resource_limits.model_dump(exclude_none=True)
            if self.resource_limits
            else None,
            autoscaling=self.autoscaling.raw() if self.autoscaling else None,
            version=self.version,
            alias=self.alias,
        )


class DeploymentPatch(ApiModel):
    version: int | None = Field(default=None, ge=1, description="Roll out this version")
    alias: str | None = Field(default=None, min_length=1, max_length=64, description="Roll out what it names")
    min_replicas: int | None = Field(default=None, ge=0, le=100)
    max_replicas: int | None = Field(default=None, ge=1, le=100)
    autoscaling: AutoscalingIn | None = None

    def to_domain(self) -> DeploymentChanges:
        return DeploymentChanges(
            version=self.version,
            alias=self.alias,
            min_replicas=self.min_replicas,
            max_replicas=self.max_replicas,
            autoscaling=self.autoscaling.raw() if self.autoscaling else None,
        )


class RevisionOut(ApiModel):
    revision: int
    version: int
    reference: str = Field(description="What was asked for: a version number, an alias or a stage")
    created_at: datetime
    rollback_of: int | None = None

    @classmethod
    def of(cls, r: Revision | None) -> RevisionOut | None:
        if r is None:
            return None
        return cls(
            revision=r.number,
            version=r.version,
            reference=r.reference,
            created_at=r.created_at,
            rollback_of=r.rollback_of,
        )


class ReplicasOut(ApiModel):
    desired: int
    ready: int
    min: int
    max: int


class LoadOut(ApiModel):
    in_flight: float = Field(description="Requests being answered, over all serving replicas")
    cpu_percent: float = Field(description="Mean CPU use per replica, in percent of one core")
    p95_ms: float | None = Field(description="p95 latency of the replicas' answers over the last window")
    observed_at: datetime

    @classmethod
    def of(cls, load: ReplicaLoad | None) -> LoadOut | None:
        if load is None:
            return None
        return cls(
            in_flight=load.in_flight,
            cpu_percent=load.cpu_percent,
            p95_ms=load.p95_ms,
            observed_at=load.observed_at,
        )


class DeploymentOut(ApiModel):
    id: str
    name: str
    model_id: str
    model_name: str | None = None
    environment: Environment
    target: DeploymentTarget
    status: DeploymentStatus
    reason: str = Field(description="Why the status is what it is, when it is not available")
    revision: RevisionOut = Field(description="The revision asked for last")
    serving: RevisionOut | None = Field(description="The revision taking traffic (null: none yet)")
    previous: RevisionOut | None = Field(description="The one before it: where rollback goes")
    replicas: ReplicasOut
    load: LoadOut | None = Field(
        default=None, description="The serving replicas' last report (null: none yet); at most 10 s old"
    )
    resource_limits: dict[str, str]
    autoscaling: dict[str, Any]
    endpoints: dict[str, str] = Field(description="The stable URLs, and the v2 model name")
    events: list[dict[str, Any]] = Field(description="The latest events, newest last")
    experiment_arms: list[dict[str, Any]] = Field(
        default_factory=list,
        description="While an experiment runs on it: each ready arm's version and where it answers",
    )
    created_by: str | None
    created_at: datetime
    updated_at: datetime

    @classmethod
    def of(cls, d: Deployment, model: Model | None = None) -> DeploymentOut:
        base = f"{API_PREFIX}/deployments/{d.name}"
        return cls(
            id=d.id,
            name=d.name,
            model_id=d.model_id,
            model_name=None if model is None else model.name,
            environment=d.environment,
            target=d.target,
            status=d.status,
            reason=d.reason,
            revision=RevisionOut.of(d.revision),
            serving=RevisionOut.of(d.serving),
            previous=RevisionOut.of(d.previous),
            replicas=ReplicasOut(
                desired=d.replicas_desired,
                ready=d.replicas_ready,
                min=d.scaling.min_replicas,
                max=d.scaling.max_replicas,
            ),
            load=LoadOut.of(d.load),
            resource_limits=d.resources.to_json(),
            autoscaling=d.scaling.autoscaling.to_json(),
            endpoints={
                "predict": f"{base}/predict",
                "batchPredict": f"{base}/batch-predict",
                "v2Infer": f"/v2/models/{d.name}/infer",
            },
            events=[_wire_event(e) for e in d.history],
            experiment_arms=[
                {
                    "arm": t.arm,
                    "version": t.version,
                    "pool": d.serving is None or t.version != d.serving.version,
                }
                for t in arm_targets(d.endpoints).values()
            ],
            created_by=d.created_by,
            created_at=d.created_at,
            updated_at=d.updated_at,
        )


def _wire_event(entry: dict[str, Any]) -> dict[str, Any]:
    kind = str(entry.get("event", ""))
    return {**{k: v for k, v in entry.items() if k != "event"}, "type": event_type_of(kind, "deployment")}


@router.post(
    "/models/{model}/deploy",
    status_code=status.HTTP_202_ACCEPTED,
    response_model=DeploymentOut,
    summary="Deploy a model version under a stable name",
)
def deploy(model: str, body: DeployIn, caller: CallerDep, c: ContainerDep) -> DeploymentOut:
    """Accepted at once: replicas start in the background; ``status`` goes from ``pending`` to
    ``available`` (or ``failed`` with a ``reason``). Production deployments need the deployer role."""
    return DeploymentOut.of(c.deployments.deploy(caller, model, body.to_domain()))


@router.get("/deployments", response_model=PageOut[DeploymentOut])
def list_deployments(
    caller: CallerDep,
    c: ContainerDep,
    model: Annotated[str | None, Query(max_length=128, description="A model id or name")] = None,
    deployment_status: Annotated[DeploymentStatus | None, Query(alias="status")] = None,
    environment: Environment | None = None,
    limit: PageLimit = 50,
    cursor: PageCursor = None,
) -> PageOut[DeploymentOut]:
    query = DeploymentFilter(model, deployment_status, environment, limit, cursor)
    page = c.deployments.list(caller, query)
    return PageOut[DeploymentOut](
        items=[DeploymentOut.of(d) for d in page.items], next_cursor=page.next_cursor
    )


@router.get("/deployments/{name}", response_model=DeploymentOut)
def get_deployment(name: str, caller: CallerDep, c: ContainerDep) -> DeploymentOut:
    deployment, model = c.deployments.get(caller, name)
    return DeploymentOut.of(deployment, model)


@router.patch("/deployments/{name}", status_code=status.HTTP_202_ACCEPTED, response_model=DeploymentOut)
def update_deployment(name: str, body: DeploymentPatch, caller: CallerDep, c: ContainerDep) -> DeploymentOut:
    """A new ``version`` or ``alias`` rolls out a new revision (traffic moves once it is warm);
    replica and autoscaling fields change the scaling at once."""
    return DeploymentOut.of(c.deployments.update(caller, name, body.to_domain()))


@router.post(
    "/deployments/{name}/rollback", status_code=status.HTTP_202_ACCEPTED, response_model=DeploymentOut
)
def rollback_deployment(name: str, caller: CallerDep, c: ContainerDep) -> DeploymentOut:
    """Roll out the revision that served before the current one, as a new revision."""
    return DeploymentOut.of(c.deployments.rollback(caller, name))


@router.delete("/deployments/{name}", status_code=status.HTTP_204_NO_CONTENT)
def delete_deployment(name: str, caller: CallerDep, c: ContainerDep) -> Response:
    """The name is free at once; its replicas stop after the requests they hold are answered."""
    c.deployments.delete(caller, name)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


async def _forward(request: Request, c: ContainerDep, caller: CallerDep, name: str, kind: str) -> Response:
    body = await request.body()
    headers = dict(request.headers)
    request_id = getattr(request.state, "request_id", None)
    if request_id:  # the replica's log line and answer carry the front's request id
        headers["x-request-id"] = request_id
    answer = await c.deployment_traffic.forward(caller, name, kind, body, headers)
    return Response(
        answer.body, status_code=answer.status, media_type=answer.content_type, headers=dict(answer.headers)
    )


_BODY: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "content": {"application/json": {"schema": {"type": "object"}}},
        "description": "The same body as the model's own /predict or /batch-predict",
    }
}


@router.post("/deployments/{name}/predict", summary="Predict through a deployment", openapi_extra=_BODY)
async def deployment_predict(name: str, request: Request, caller: CallerDep, c: ContainerDep) -> Response:
    return await _forward(request, c, caller, name, "predict")


async def deployment_predict_lane(name: str, request: Request) -> Response:
    """``deployment_predict`` as ``PredictLane`` calls it: the same checks without dependency solving."""
    caller = await authenticate(request)
    return await _forward(request, container_of(request), caller, name, "predict")


@router.post(
    "/deployments/{name}/batch-predict", summary="Batch predict through a deployment", openapi_extra=_BODY
)
async def deployment_batch_predict(
    name: str, request: Request, caller: CallerDep, c: ContainerDep
) -> Response:
    return await _forward(request, c, caller, name, "batch-predict")


async def forward_v2(request: Request, c: ContainerDep, caller: CallerDep, name: str) -> Response:
    """The v2 protocol's ``/v2/models/{name}/infer`` where ``name`` is a deployment."""
    return await _forward(request, c, caller, name, "v2")
