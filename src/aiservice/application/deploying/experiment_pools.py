"""Replica pools for the arms of an experiment on a deployment (ADR 20, ADR 24).

While an experiment on a deployment runs, every arm must answer from replicas of its own version, as
KServe's canary keeps the previous and the new revision of an InferenceService running side by side.
An arm whose version is the deployment's serving version is answered by the serving revision; every
other arm gets a *pool*: a replica group of that version, run by the same deployer as the revisions
(``Deployer.ensure``), under a revision number of its own, ``POOL_REVISION_BASE + version`` (above any
real revision; ``aiservice serve-model`` serves that version). The reconcile loop starts the pools,
writes where each arm answers into the deployment's ``endpoints`` (``arm:<version>:<name>``, beside
the revisions' own entries), and, once the experiment ends, retires them like a replaced revision:
after a drain, so no front still routing by its previous snapshot finds them gone.

A pool's size follows the serving revision's (which the autoscaler sizes): the arm's share of it,
rounded up, at least one replica; a shadow arm gets a copy of every request, so its share is 1.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping
from dataclasses import dataclass

from aiservice.application.experimenting.ports import ExperimentDirectory
from aiservice.application.ports import UnitOfWorkFactory
from aiservice.application.registry import find_model
from aiservice.application.versions import resolve_in
from aiservice.domain.deployments import Deployment
from aiservice.domain.errors import DomainError
from aiservice.domain.experiments import Arm, Experiment
from aiservice.domain.references import ModelReference

log = logging.getLogger(__name__)

POOL_REVISION_BASE = 1_000_000  # far above any real revision (a deployment keeps counting from 1)
ARM_KEY_PREFIX = "arm:"


def pool_revision(version: int) -> int:
    """The revision number a pool of ``version`` runs under."""
    return POOL_REVISION_BASE + version


def is_pool_revision(revision: int) -> bool:
    return revision >= POOL_REVISION_BASE


def pool_version(revision: int) -> int:
    return revision - POOL_REVISION_BASE


@dataclass(frozen=True, slots=True)
class ArmTarget:
    """Where one arm of a running deployment experiment answers: its version's replicas."""

    arm: str
    version: int
    endpoint: str


def arm_key(arm: str, version: int) -> str:
    return f"{ARM_KEY_PREFIX}{version}:{arm}"


def arm_targets(endpoints: Mapping[str, str]) -> dict[str, ArmTarget]:
    """The arms with a ready endpoint, by arm name, read back from a deployment's ``endpoints``."""
    found: dict[str, ArmTarget] = {}
    for key, endpoint in endpoints.items():
        if key.startswith(ARM_KEY_PREFIX):
            version, _, arm = key[len(ARM_KEY_PREFIX) :].partition(":")
            if version.isdigit() and arm:
                found[arm] = ArmTarget(arm, int(version), endpoint)
    return found


@dataclass(frozen=True, slots=True)
class ArmPlan:
    """What one arm needs: its version, and replicas of its own (0: the serving revision answers it)."""

    arm: str
    version: int
    replicas: int


def pool_size(serving_replicas: int, share: float) -> int:
    """The arm's share of the serving revision's replicas, rounded up, at least one, at most as many."""
    ceiling = max(1, serving_replicas)
    return max(1, min(ceiling, math.ceil(ceiling * max(0.0, share) - 1e-9)))


def plan_arms(deployment: Deployment, experiment: Experiment, versions: Mapping[str, int]) -> list[ArmPlan]:
    """Each arm's version and the pool it needs beside ``deployment``'s serving revision."""
    serving = None if deployment.serving is None else deployment.serving.version
    weights = experiment.weights()
    shadows = {arm.name for arm in experiment.shadow_arms()}
    plans: list[ArmPlan] = []
    for arm in experiment.arms:
        version = versions.get(arm.name)
        if version is None:
            continue
        share = 1.0 if arm.name in shadows else weights.get(arm.name, 0.0)
        replicas = 0 if version == serving else pool_size(deployment.replicas_desired, share)
        plans.append(ArmPlan(arm.name, version, replicas))
    return plans


def _reference(model_id: str, arm: Arm) -> ModelReference:
    reference = arm.reference
    if isinstance(reference, str) and reference.isascii() and reference.isdigit():
        reference = int(reference)
    if isinstance(reference, int):
        return ModelReference(model_id, version=reference)
    return ModelReference(model_id, alias=reference)


class ExperimentPools:
    """The reconcile loop's view of running deployment experiments: refreshed once per pass, with each
    arm's version resolved then (an alias moved meanwhile is followed on the next pass)."""

    def __init__(self, directory: ExperimentDirectory, uow: UnitOfWorkFactory) -> None:
        self._directory = directory
        self._uow = uow
        self._running: dict[tuple[str, str], tuple[Experiment, dict[str, int]]] = {}

    def refresh(self) -> None:
        running: dict[tuple[str, str], tuple[Experiment, dict[str, int]]] = {}
        for experiment in self._directory.running():
            if experiment.deployment is None:
                continue
            try:
                running[(experiment.tenant_id, experiment.deployment)] = (
                    experiment,
                    self._versions(experiment),
                )
            except Exception:  # one experiment's trouble must not stop the others' pools
                log.exception("resolving the arms of experiment %s failed", experiment.id)
        self._running = running

    def plan(self, deployment: Deployment) -> list[ArmPlan]:
        found = self._running.get((deployment.tenant_id, deployment.name))
        if found is None or found[0].model_id != deployment.model_id:
            return []
        return plan_arms(deployment, *found)

    def revisions(self, deployment: Deployment) -> set[int]:
        """The pool revisions ``deployment`` needs running now."""
        return {pool_revision(p.version) for p in self.plan(deployment) if p.replicas}

    def _versions(self, experiment: Experiment) -> dict[str, int]:
        versions: dict[str, int] = {}
        with self._uow(experiment.tenant_id, writes=False) as uow:
            model = find_model(uow, experiment.model_id)
            for arm in experiment.arms:
                try:
                    versions[arm.name] = resolve_in(uow, model, _reference(model.id, arm)).version
                except DomainError:  # an alias removed meanwhile: that arm gets no pool
                    continue
        return versions
