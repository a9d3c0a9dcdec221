"""Experiment use cases: create, list, read, start, pause, resume, stop, promote, delete, and results.

Each change runs in one unit of work with its event in the outbox (audited with the call that made it),
then tells this process's routing (``on_change``) so the next prediction follows it at once; other
worker processes see it within the routing snapshot's refresh. One model runs (or pauses) at most one
experiment at a time. Promotion reuses the registry's alias and stage use cases, so their usual events
and permission checks apply: the winner's version takes the champion arm's alias (or, when the
champion names a version number or a stage, the production stage).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from aiservice.application.audit import note_changes
from aiservice.application.experimenting.deployment_arms import deployment_of_experiment
from aiservice.application.experimenting.ports import ExperimentUnitOfWork, ExperimentUnitOfWorkFactory
from aiservice.application.experimenting.results import Results, results_of
from aiservice.application.ports import Clock
from aiservice.application.registry import find_model
from aiservice.application.versions import ModelVersions, resolve_in
from aiservice.domain.errors import Conflict, FieldError, InvalidInput, NotFound
from aiservice.domain.events import (
    ExperimentCreated,
    ExperimentPaused,
    ExperimentPromoted,
    ExperimentStarted,
    ExperimentStopped,
)
from aiservice.domain.experiments import (
    Arm,
    BanditPlan,
    CanaryPlan,
    Experiment,
    ExperimentMode,
    ExperimentStatus,
    RoutingKeySpec,
)
from aiservice.domain.models import Model, Stage
from aiservice.domain.pagination import Page
from aiservice.domain.references import ModelReference
from aiservice.domain.tenancy import Permission, Principal, Role

RESULT_ROWS = 200_000  # the latest observations a results page reads
DEPLOYMENT_GONE_SUBJECT = "system:deployment-deleted"


@dataclass(frozen=True)
class NewExperiment:
    """The create body (camelCase names are the HTTP layer's); arms as ``{name, version|alias, weight}``."""

    name: str
    model: str | None  # or, instead, a deployment: its model's versions are the arms
    arms: Sequence[Mapping[str, Any]]
    mode: ExperimentMode = ExperimentMode.AB
    deployment: str | None = None
    champion: str | None = None
    routing_key: Mapping[str, Any] | None = None
    confidence: float = 0.95
    min_detectable_effect: float = 0.01
    auto_promote: bool = False
    canary: Mapping[str, Any] | None = None
    bandit: Mapping[str, Any] | None = None


@dataclass(frozen=True)
class ExperimentFilter:
    model: str | None = None
    status: ExperimentStatus | None = None
    mode: ExperimentMode | None = None
    limit: int = 50
    cursor: str | None = None


@dataclass(frozen=True)
class Promotion:
    experiment: Experiment
    winner: str
    version: int
    target: str  # the alias or stage the winner's version took


def parse_arms(raw: Sequence[Mapping[str, Any]]) -> list[Arm]:
    """The body's arms; a version and an alias together, or neither, is an error naming the arm."""
    arms: list[Arm] = []
    errors: list[FieldError] = []
    for index, item in enumerate(raw):
        version, alias = item.get("version"), item.get("alias")
        if (version is None) == (alias is None):
            errors.append(FieldError(f"body.arms.{index}.version", "give a version or an alias (one)"))
            continue
        weight = item.get("weight", 1.0)
        reference: int | str = version if version is not None else str(alias)
        arms.append(Arm(str(item.get("name", "")), reference, weight))
    if errors:
        raise InvalidInput("Invalid arms: each names a version or an alias.", errors=errors)
    return arms


def arm_reference(model: Model, arm: Arm) -> ModelReference:
    reference = arm.reference
    if isinstance(reference, str) and reference.isascii() and reference.isdigit():
        reference = int(reference)
    if isinstance(reference, int):
        return ModelReference(model.id, version=reference)
    return ModelReference(model.id, alias=reference)


def resolve_arms(uow: ExperimentUnitOfWork, model: Model, arms: Sequence[Arm]) -> dict[str, int]:
    """Each arm's version now; an arm naming no version of the model is a 422 naming its field."""
    versions: dict[str, int] = {}
    errors: list[FieldError] = []
    for index, arm in enumerate(arms):
        ref = arm_reference(model, arm)
        try:
            versions[arm.name] = resolve_in(uow, model, ref).version
        except NotFound:
            which = "version" if ref.version is not None else "alias"
            errors.append(
                FieldError(f"body.arms.{index}.{which}", f"names no version of model {model.name!r}")
            )
    if errors:
        raise InvalidInput(
            "An arm names no version of the model: " + "; ".join(e.field for e in errors),
            code="unknown-arm-reference",
            errors=errors,
        )
    return versions


class Experiments:
    def __init__(
        self,
        uow: ExperimentUnitOfWorkFactory,
        clock: Clock,
        versions: ModelVersions,
        on_change: Callable[[Experiment], None] = lambda experiment: None,
    ) -> None:
        self._uow = uow
        self._clock = clock
        self._versions = versions
        self.on_change = on_change  # this process's routing follows at once
        # A deployment experiment's winner is rolled out: (principal, deployment, version) -> target.
        self.roll_deployment: Callable[[Principal, str, int], str] | None = None

    # -- create and read -------------------------------------------------------------------------

    def create(self, principal: Principal, spec: NewExperiment) -> Experiment:
        principal.require(Permission.EXPERIMENT_WRITE)
        arms = parse_arms(spec.arms)
        routing = None if spec.routing_key is None else RoutingKeySpec.parse(spec.routing_key)
        canary = None if spec.canary is None else CanaryPlan.parse(spec.canary)
        bandit = None if spec.bandit is None else BanditPlan.parse(spec.bandit, max(len(arms), 1))
        if (spec.model is None) == (spec.deployment is None):
            where = "body.model" if spec.model is None else "body.deployment"
            raise InvalidInput(
                "An experiment runs on a model or on a deployment: give exactly one of the two.",
                errors=[FieldError(where, "give exactly one of model and deployment")],
            )
        with self._uow(principal.tenant_id) as uow:
            if spec.deployment is not None:  # the deployment's model; its endpoints are routed
                deployed = deployment_of_experiment(uow, spec.deployment, routing)
                model = find_model(uow, deployed.model_id, principal)
            else:
                model = find_model(uow, str(spec.model), principal)
            experiment = Experiment.create(
                tenant_id=principal.tenant_id,
                name=spec.name,
                model_id=model.id,
                mode=spec.mode,
                arms=arms,
                now=self._clock(),
                champion=spec.champion,
                deployment=spec.deployment,
                routing_key=routing,
                confidence=spec.confidence,
                min_detectable_effect=spec.min_detectable_effect,
                auto_promote=spec.auto_promote,
                canary=canary,
                bandit=bandit,
                created_by=principal.subject,
            )
            resolve_arms(uow, model, experiment.arms)
            uow.experiments.add(experiment)
            uow.record(
                ExperimentCreated(
                    **_about(experiment),
                    arms=[arm.to_json() for arm in experiment.arms],
                    champion=experiment.champion,
                )
            )
            uow.commit()
        return experiment

    def list(self, principal: Principal, query: ExperimentFilter) -> Page[Experiment]:
        principal.require(Permission.MODEL_READ)
        with self._uow(principal.tenant_id, writes=False) as uow:
            model_id = None if query.model is None else find_model(uow, query.model, principal).id
            page = uow.experiments.page(
                model_id=model_id,
                status=query.status,
                mode=query.mode,
                limit=query.limit,
                cursor=query.cursor,
            )
        if principal.model_ids is None:
            return page
        return Page([e for e in page.items if principal.sees_model(e.model_id)], page.next_cursor)

    def get(self, principal: Principal, experiment_id: str) -> Experiment:
        principal.require(Permission.MODEL_READ)
        with self._uow(principal.tenant_id, writes=False) as uow:
            return self._visible(uow, principal, experiment_id)

    def results(self, principal: Principal, experiment_id: str) -> Results:
        principal.require(Permission.MODEL_READ)
        with self._uow(principal.tenant_id, writes=False) as uow:
            experiment = self._visible(uow, principal, experiment_id)
            category = find_model(uow, experiment.model_id).category
            rows = uow.experiments.observations(experiment.id, RESULT_ROWS)
        return results_of(experiment, rows, category)

    # -- lifecycle ---------------------------------------------------------------------------------

    def start(self, principal: Principal, experiment_id: str) -> Experiment:
        principal.require(Permission.EXPERIMENT_WRITE)
        with self._uow(principal.tenant_id) as uow:
            experiment = self._visible(uow, principal, experiment_id, for_update=True)
            experiment.start(self._clock())  # the state check first: a 409 names the state
            self._only_one(uow, experiment)
            model = find_model(uow, experiment.model_id, principal)
            resolve_arms(uow, model, experiment.arms)  # a version deleted since creation
            uow.experiments.save(experiment)
            uow.record(ExperimentStarted(**_about(experiment), weights=experiment.weights()))
            uow.commit()
        self.on_change(experiment)
        return experiment

    def pause(self, principal: Principal, experiment_id: str) -> Experiment:
        return self._change(principal, experiment_id, "pause")

    def resume(self, principal: Principal, experiment_id: str) -> Experiment:
        return self._change(principal, experiment_id, "resume")

    def stop(self, principal: Principal, experiment_id: str, reason: str = "") -> Experiment:
        return self._change(principal, experiment_id, "stop", reason or "stopped by " + principal.subject)

    def _change(self, principal: Principal, experiment_id: str, action: str, reason: str = "") -> Experiment:
        principal.require(Permission.EXPERIMENT_WRITE)
        with self._uow(principal.tenant_id) as uow:
            experiment = self._visible(uow, principal, experiment_id, for_update=True)
            before = experiment.status.value
            now = self._clock()
            if action == "pause":
                experiment.pause(now)
                event: Any = ExperimentPaused(**_about(experiment))
            elif action == "resume":
                experiment.resume(now)
                self._only_one(uow, experiment)
                event = ExperimentStarted(**_about(experiment), weights=experiment.weights())
            else:
                experiment.stop(now, reason)
                event = ExperimentStopped(**_about(experiment), reason=reason)
            note_changes({"status": before}, {"status": experiment.status.value})
            uow.experiments.save(experiment)
            uow.record(event)
            uow.commit()
        self.on_change(experiment)
        return experiment

    def deployment_deleted(self, tenant_id: str, model_id: str, deployment: str) -> tuple[Experiment, ...]:
        """A deleted deployment routes nothing: its running or paused experiments stop (audited and
        evented as the controller's changes are), so a new deployment of that name starts clean."""
        principal = Principal(DEPLOYMENT_GONE_SUBJECT, tenant_id, frozenset({Role.ADMIN}))
        with self._uow(tenant_id, writes=False) as uow:
            doomed = [e.id for e in uow.experiments.active_of_model(model_id) if e.deployment == deployment]
        return tuple(
            self.stop(principal, ident, f"deployment {deployment!r} was deleted") for ident in doomed
        )

    def delete(self, principal: Principal, experiment_id: str) -> None:
        principal.require(Permission.EXPERIMENT_WRITE)
        with self._uow(principal.tenant_id) as uow:
            experiment = self._visible(uow, principal, experiment_id, for_update=True)
            if experiment.status in (ExperimentStatus.RUNNING, ExperimentStatus.PAUSED):
                raise Conflict(
                    f"Experiment {experiment.name!r} is {experiment.status.value}: "
                    "stop it before deleting it.",
                    code="experiment-state",
                    extra={"experiment": experiment.id, "status": experiment.status.value},
                )
            uow.experiments.delete(experiment.id)
            uow.commit()
        experiment.status = ExperimentStatus.STOPPED
        self.on_change(experiment)

    # -- promotion ---------------------------------------------------------------------------------

    def promote(
        self, principal: Principal, experiment_id: str, arm: str | None = None, reason: str = ""
    ) -> Promotion:
        """The winner (``arm``, else the verdict's) takes the champion's place; the experiment completes."""
        principal.require(Permission.EXPERIMENT_WRITE)
        with self._uow(principal.tenant_id, writes=False) as uow:
            experiment = self._visible(uow, principal, experiment_id)
            model = find_model(uow, experiment.model_id, principal)
            if experiment.status not in (
                ExperimentStatus.RUNNING,
                ExperimentStatus.PAUSED,
                ExperimentStatus.STOPPED,
            ):
                raise Conflict(
                    f"Cannot promote experiment {experiment.name!r}: it is {experiment.status.value}.",
                    code="experiment-state",
                    extra={"experiment": experiment.id, "status": experiment.status.value},
                )
            if arm is None:
                results = results_of(
                    experiment, uow.experiments.observations(experiment.id, RESULT_ROWS), model.category
                )
                arm = results.verdict.winner
                if arm is None:
                    raise Conflict(
                        f"Experiment {experiment.name!r} has no winner yet ({results.verdict.text}); "
                        "name the arm to promote.",
                        code="no-winner",
                        extra={"experiment": experiment.id, "verdict": results.verdict.text},
                    )
                reason = reason or f"verdict: {results.verdict.text}"
            names = {a.name: a for a in experiment.arms}
            if arm not in names:
                raise InvalidInput(
                    f"{arm!r} is not an arm of experiment {experiment.name!r}.",
                    errors=[FieldError("body.arm", f"must name one of the arms: {sorted(names)}")],
                )
            version = resolve_in(uow, model, arm_reference(model, names[arm])).version
        if experiment.deployment is not None and self.roll_deployment is not None:
            target = self.roll_deployment(principal, experiment.deployment, version)  # a rollout
        else:
            target = self._move_champion(principal, model, experiment, version)
        with self._uow(principal.tenant_id) as uow:
            experiment = self._visible(uow, principal, experiment_id, for_update=True)
            reason = reason or f"promoted by {principal.subject}"
            experiment.complete(arm, self._clock(), reason)
            uow.experiments.save(experiment)
            uow.record(
                ExperimentPromoted(
                    **_about(experiment), winner=arm, version=version, target=target, reason=reason
                )
            )
            uow.commit()
        self.on_change(experiment)
        return Promotion(experiment, arm, version, target)

    def _move_champion(self, principal: Principal, model: Model, experiment: Experiment, version: int) -> str:
        champion = experiment.champion_arm.reference
        stages = {s.value for s in Stage}
        if isinstance(champion, str) and not champion.isdigit() and champion not in stages | {"latest"}:
            self._versions.set_alias(principal, model.id, champion, version)
            return champion
        stage = Stage(champion) if isinstance(champion, str) and champion in stages else Stage.PRODUCTION
        self._versions.set_stage(principal, model.id, version, stage, archive_existing=True)
        return stage.value

    # -- helpers -----------------------------------------------------------------------------------

    def _visible(
        self, uow: ExperimentUnitOfWork, principal: Principal, experiment_id: str, *, for_update: bool = False
    ) -> Experiment:
        experiment = uow.experiments.get(experiment_id, for_update=for_update)
        if experiment is None or not principal.sees_model(experiment.model_id):
            raise NotFound(f"No experiment {experiment_id!r} exists.", extra={"experiment": experiment_id})
        return experiment

    @staticmethod
    def _only_one(uow: ExperimentUnitOfWork, experiment: Experiment) -> None:
        others = [e for e in uow.experiments.active_of_model(experiment.model_id) if e.id != experiment.id]
        if others:
            raise Conflict(
                f"Model already runs experiment {others[0].name!r} ({others[0].status.value}); "
                "stop it first: one experiment per model at a time.",
                code="experiment-running",
                extra={"experiment": others[0].id},
            )


def _about(experiment: Experiment) -> dict[str, Any]:
    return {
        "tenant_id": experiment.tenant_id,
        "aggregate_id": experiment.id,
        "name": experiment.name,
        "model_id": experiment.model_id,
        "mode": experiment.mode.value,
    }
