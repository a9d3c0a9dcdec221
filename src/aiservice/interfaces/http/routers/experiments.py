"""``/experiments``: live comparisons of a model's versions, their lifecycle, promotion and results."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query, Response, status
from pydantic import Field

from aiservice.application.experimenting.experiments import ExperimentFilter, NewExperiment
from aiservice.domain.experiments import Experiment, ExperimentMode, ExperimentStatus
from aiservice.interfaces.http.deps import CallerDep, ContainerDep, PageCursor, PageLimit
from aiservice.interfaces.http.paths import API_PREFIX
from aiservice.interfaces.http.schemas import ApiModel, PageOut

router = APIRouter(prefix=f"{API_PREFIX}/experiments", tags=["experiments"])

ExperimentId = Annotated[str, Field(max_length=64)]


class ArmIn(ApiModel):
    name: str = Field(max_length=64, examples=["B"])
    version: int | None = Field(default=None, description="A version number of the model")
    alias: str | None = Field(default=None, max_length=64, description="Or an alias or stage name")
    weight: float = Field(default=1.0, description="Relative share of traffic (ab and bandit start)")


class ExperimentIn(ApiModel):
    name: str = Field(max_length=200, examples=["new-ranker"])
    model: str | None = Field(
        default=None, min_length=1, max_length=128, description="A model id or name (or a deployment)"
    )
    deployment: str | None = Field(
        default=None,
        max_length=63,
        description="Or a deployment: its endpoints are routed, its model's versions are the arms",
    )
    mode: ExperimentMode = ExperimentMode.AB
    arms: list[ArmIn] = Field(max_length=50)
    champion: str | None = Field(default=None, description="The arm serving today (default: the first)")
    routing_key: dict[str, Any] | None = Field(
        default=None, description='Sticky assignment by {"header": "X-User-Id"} or {"input": "user_id"}'
    )
    confidence: float = 0.95
    min_detectable_effect: float = 0.01
    auto_promote: bool = False
    canary: dict[str, Any] | None = Field(
        default=None,
        description="steps, minRequests, minSeconds, maxErrorRate, maxLatencyRatio, maxMetricDrop",
    )
    bandit: dict[str, Any] | None = Field(
        default=None, description="algorithm (thompson, ucb), rewardMetric, rewardKind, minExploration"
    )

    def to_domain(self) -> NewExperiment:
        return NewExperiment(
            name=self.name,
            model=self.model,
            arms=[arm.model_dump(exclude_none=True) for arm in self.arms],
            mode=self.mode,
            deployment=self.deployment,
            champion=self.champion,
            routing_key=self.routing_key,
            confidence=self.confidence,
            min_detectable_effect=self.min_detectable_effect,
            auto_promote=self.auto_promote,
            canary=self.canary,
            bandit=self.bandit,
        )


class PromoteIn(ApiModel):
    arm: str | None = Field(default=None, max_length=64, description="Default: the verdict's winner")


class ExperimentOut(ApiModel):
    id: str
    name: str
    model_id: str
    deployment: str | None
    mode: ExperimentMode
    status: ExperimentStatus
    arms: list[dict[str, Any]]
    champion: str
    routing_key: dict[str, str] | None
    confidence: float
    min_detectable_effect: float
    auto_promote: bool
    canary: dict[str, Any] | None
    canary_step: int | None
    bandit: dict[str, Any] | None
    weights: dict[str, float] = Field(description="Each arm's share of the answered traffic now")
    created_at: str
    started_at: str | None
    ended_at: str | None
    winner: str | None
    reason: str

    @classmethod
    def of(cls, experiment: Experiment) -> ExperimentOut:
        return cls.model_validate(experiment.to_json())


@router.post("", status_code=status.HTTP_201_CREATED, response_model=ExperimentOut)
def create_experiment(body: ExperimentIn, caller: CallerDep, c: ContainerDep) -> ExperimentOut:
    """A draft experiment; ``start`` routes the model's predictions by it."""
    return ExperimentOut.of(c.experiments.experiments.create(caller, body.to_domain()))


@router.get("", response_model=PageOut[ExperimentOut])
def list_experiments(
    caller: CallerDep,
    c: ContainerDep,
    model: Annotated[str | None, Query(max_length=128, description="A model id or name")] = None,
    experiment_status: Annotated[ExperimentStatus | None, Query(alias="status")] = None,
    mode: ExperimentMode | None = None,
    limit: PageLimit = 50,
    cursor: PageCursor = None,
) -> PageOut[ExperimentOut]:
    page = c.experiments.experiments.list(
        caller, ExperimentFilter(model, experiment_status, mode, limit, cursor)
    )
    return PageOut[ExperimentOut](
        items=[ExperimentOut.of(e) for e in page.items], next_cursor=page.next_cursor
    )


@router.get("/{experiment_id}", response_model=ExperimentOut)
def get_experiment(experiment_id: ExperimentId, caller: CallerDep, c: ContainerDep) -> ExperimentOut:
    return ExperimentOut.of(c.experiments.experiments.get(caller, experiment_id))


@router.post("/{experiment_id}/start", response_model=ExperimentOut)
def start_experiment(experiment_id: ExperimentId, caller: CallerDep, c: ContainerDep) -> ExperimentOut:
    """The model's predictions are routed by it from now on (one running experiment per model)."""
    return ExperimentOut.of(c.experiments.experiments.start(caller, experiment_id))


@router.post("/{experiment_id}/pause", response_model=ExperimentOut)
def pause_experiment(experiment_id: ExperimentId, caller: CallerDep, c: ContainerDep) -> ExperimentOut:
    """The champion answers alone while paused; ``resume`` routes by the experiment again."""
    return ExperimentOut.of(c.experiments.experiments.pause(caller, experiment_id))


@router.post("/{experiment_id}/resume", response_model=ExperimentOut)
def resume_experiment(experiment_id: ExperimentId, caller: CallerDep, c: ContainerDep) -> ExperimentOut:
    return ExperimentOut.of(c.experiments.experiments.resume(caller, experiment_id))


@router.post("/{experiment_id}/stop", response_model=ExperimentOut)
def stop_experiment(experiment_id: ExperimentId, caller: CallerDep, c: ContainerDep) -> ExperimentOut:
    """Ends it without a winner: the champion serves alone again."""
    return ExperimentOut.of(c.experiments.experiments.stop(caller, experiment_id))


@router.post("/{experiment_id}/promote", response_model=ExperimentOut)
def promote_experiment(
    experiment_id: ExperimentId, caller: CallerDep, c: ContainerDep, body: PromoteIn | None = None
) -> ExperimentOut:
    """The winner (``arm``, else the verdict's) takes the champion arm's alias, or the production stage
    when the champion names a version or a stage; the experiment completes."""
    arm = None if body is None else body.arm
    return ExperimentOut.of(c.experiments.experiments.promote(caller, experiment_id, arm).experiment)


@router.delete("/{experiment_id}", status_code=status.HTTP_204_NO_CONTENT)
def delete_experiment(experiment_id: ExperimentId, caller: CallerDep, c: ContainerDep) -> Response:
    """Deletes a draft or ended experiment and its observations (stop a running one first)."""
    c.experiments.experiments.delete(caller, experiment_id)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.get("/{experiment_id}/results")
def get_experiment_results(experiment_id: ExperimentId, caller: CallerDep, c: ContainerDep) -> dict[str, Any]:
    """Per arm: requests, errors, latency percentiles, the prediction distribution and (with feedback:
    true labels or rewards through ``/predictions/{requestId}/feedback``) the outcome with its interval;
    then the verdict: the test, the always-valid p-value (or a bandit's posterior), the interval of
    the difference, the minimum sample size and a plain text."""
    return c.experiments.experiments.results(caller, experiment_id).to_dict()
