"""The reconcile loop: make what runs match what the database asks for, and write back what it sees.

Runs on one process per host (the host worker) every few seconds and whenever a use case wakes it.
Desired state lives in the database, so after a restart the first pass starts every live deployment's
serving revision again. Per deployment and pass:

1. a revision being rolled out gets its replicas started; once all are warm, traffic moves to it
   (``rolled_out``) and the revision it replaced keeps running for ``drain_s`` more, so no front still
   routing to it (routes are cached for a moment) finds it gone; a revision whose replicas cannot start
   is stopped and the deployment is ``degraded`` (or ``failed`` when nothing serves);
2. the serving revision is kept at its desired replica count (a crashed replica is the deployer's to
   replace), and the autoscaler may change that count;
3. whatever runs that no live deployment wants (deleted deployments, replaced revisions past their
   drain) is stopped.

Calls to deployers happen outside any transaction; what they reported is then applied to the freshly
locked row, where the domain ignores reports about a revision that is no longer the one asked for.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from datetime import datetime, timedelta

from aiservice.application.deploying.autoscaler import decide, is_quiet
from aiservice.application.deploying.experiment_pools import (
    ExperimentPools,
    arm_key,
    is_pool_revision,
    pool_revision,
)
from aiservice.application.deploying.ports import (
    Deployer,
    DeploymentDirectory,
    ReplicaSpec,
    RevisionState,
)
from aiservice.application.ports import Clock, UnitOfWorkFactory
from aiservice.domain.deployments import Deployment, DeploymentTarget, ReplicaLoad, Revision

log = logging.getLogger(__name__)

LOAD_EVERY = timedelta(seconds=10)


@dataclass(frozen=True)
class Observation:
    """What one pass saw of one deployment."""

    rolling: RevisionState | None = None  # the revision being rolled out
    serving: RevisionState | None = None


class DeploymentReconciler:
    def __init__(
        self,
        directory: DeploymentDirectory,
        uow: UnitOfWorkFactory,
        deployers: Mapping[DeploymentTarget, Deployer],
        clock: Clock,
        *,
        host_replicas: int,
        drain_s: float = 10.0,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self._directory = directory
        self._uow = uow
        self._deployers = deployers
        self._clock = clock
        self._host_replicas = host_replicas  # local replicas this host may run for one deployment
        self._drain_s = drain_s
        self._now = monotonic
        self._draining: dict[tuple[str, int], float] = {}  # (deployment id, revision) -> stop after
        self._quiet_since: dict[str, float] = {}
        self._changed_at: dict[str, float] = {}
        self._desired: dict[str, int] = {}  # the replica count each deployment had at the last look
        self.pools: ExperimentPools | None = None  # the arms of experiments on deployments (their pools)

    def reconcile(self) -> None:
        """One pass over every live deployment; a failure with one never stops the others."""
        wanted: dict[str, set[int]] = {}
        if self.pools is not None:
            try:
                self.pools.refresh()
            except Exception:  # the revisions still get reconciled; the pools wait for the next pass
                log.exception("reading the running deployment experiments failed")
        for deployment in self._directory.live():
            deployer = self._deployers.get(deployment.target)
            if deployer is None:
                continue
            wanted[deployment.id] = _revisions_in_use(deployment)
            if self.pools is not None:
                wanted[deployment.id] |= self.pools.revisions(deployment)
            try:
                self._reconcile_one(deployment, deployer)
            except Exception:  # one deployment's trouble must not stall the rest
                log.exception("reconciling deployment %s/%s failed", deployment.tenant_id, deployment.name)
        self._stop_unwanted(wanted)

    def _reconcile_one(self, deployment: Deployment, deployer: Deployer) -> None:
        scales = not deployer.scales_itself
        seen = Observation()
        if deployment.rolling:
            replicas = deployment.replicas_desired  # 0: a dev deployment scaled to zero, nothing to warm
            rolling = deployer.ensure(_spec(deployment, deployment.revision, replicas)) if replicas else None
            seen = Observation(rolling=rolling or RevisionState(deployment.revision.number, 0, 0))
        if deployment.serving is not None:  # keeps serving while a new revision rolls out
            serving = deployer.ensure(_spec(deployment, deployment.serving, deployment.replicas_desired))
            seen = Observation(rolling=seen.rolling, serving=serving)
        self._apply(deployment, seen, autoscale=scales, arms=self._arms(deployment, deployer, seen))

    def _arms(self, deployment: Deployment, deployer: Deployer, seen: Observation) -> dict[str, str]:
        """Start the pools of a running experiment's arms; where each ready arm answers."""
        endpoints: dict[str, str] = {}
        for plan in [] if self.pools is None else self.pools.plan(deployment):
            state: RevisionState | None = seen.serving
            if plan.replicas:
                pool = _spec(deployment, deployment.revision, plan.replicas)
                pool = replace(pool, revision=pool_revision(plan.version), version=plan.version)
                state = deployer.ensure(pool)
            if state is not None and state.ready and state.endpoint:
                endpoints[arm_key(plan.arm, plan.version)] = state.endpoint
        return endpoints

    def _apply(
        self, stale: Deployment, seen: Observation, *, autoscale: bool, arms: dict[str, str] | None = None
    ) -> None:
        with self._uow(stale.tenant_id) as uow:
            deployment = uow.deployments.get(stale.id, for_update=True)
            if deployment is None or not deployment.live:
                return
            before = _fingerprint(deployment)
            now = self._clock()
            replaced = deployment.serving
            if seen.rolling is not None:
                self._roll(deployment, seen.rolling, now)
            if deployment.serving is not None and deployment.serving is not replaced and replaced is not None:
                self._draining[(deployment.id, replaced.number)] = self._now() + self._drain_s
            deployment.endpoints = _endpoints(seen) | (arms or {})
            if seen.serving is not None and not deployment.rolling:
                self._observe_serving(deployment, seen.serving, now, autoscale=autoscale)
            if _fingerprint(deployment) != before:
                uow.deployments.save(deployment)
                uow.commit()

    def _roll(self, deployment: Deployment, state: RevisionState, now: datetime) -> None:
        if state.failed:
            deployment.revision_failed(state.revision, state.failed, now)
            self._draining[(deployment.id, state.revision)] = self._now()  # stop it now
        elif state.ready >= deployment.replicas_desired:
            deployment.rolled_out(state.revision, state.ready, now)

    def _observe_serving(
        self, deployment: Deployment, state: RevisionState, now: datetime, *, autoscale: bool
    ) -> None:
        reason = state.failed or (
            f"{state.ready} of {deployment.replicas_desired} replicas ready"
            if state.ready < deployment.replicas_desired
            else ""
        )
        deployment.replicas_observed(state.ready, now, reason)
        _note_load(deployment, state, now)
        if not autoscale:
            return
        if self._desired.get(deployment.id) != deployment.replicas_desired:
            self._count_changed(deployment)  # by a request waking it, a PATCH, or this loop
        quiet = self._quiet_for(deployment.id, state)
        decision = decide(
            deployment,
            state,
            host_limit=self._host_replicas,
            quiet_s=quiet,
            since_change_s=self._now() - self._changed_at[deployment.id],
        )
        if decision is not None and deployment.scale_to(decision.replicas, decision.reason, now):
            self._count_changed(deployment)

    def _count_changed(self, deployment: Deployment) -> None:
        """The cool-down and the quiet time count from the latest change of the replica count."""
        self._desired[deployment.id] = deployment.replicas_desired
        self._changed_at[deployment.id] = self._now()
        self._quiet_since.pop(deployment.id, None)

    def _quiet_for(self, deployment_id: str, state: RevisionState) -> float:
        if not is_quiet(state) or state.ready < state.desired:  # busy, or replicas still starting
            self._quiet_since.pop(deployment_id, None)
            return 0.0
        return self._now() - self._quiet_since.setdefault(deployment_id, self._now())

    def _stop_unwanted(self, wanted: dict[str, set[int]]) -> None:
        now = self._now()
        for deployer in self._deployers.values():
            for deployment_id, revisions in deployer.revisions().items():
                for revision in revisions:
                    if revision in wanted.get(deployment_id, set()):
                        continue
                    # An experiment's pool drains: fronts may route by their snapshot a moment more.
                    drain = self._drain_s if is_pool_revision(revision) else 0.0
                    until = self._draining.setdefault((deployment_id, revision), now + drain)
                    if until <= now:
                        deployer.retire(deployment_id, revision, self._drain_s)
                        self._draining.pop((deployment_id, revision), None)


def _revisions_in_use(deployment: Deployment) -> set[int]:
    """The revisions a live deployment still needs running: the serving one and the one rolling out."""
    numbers = {deployment.serving.number} if deployment.serving is not None else set()
    if deployment.rolling:
        numbers.add(deployment.revision.number)
    return numbers


def _spec(deployment: Deployment, revision: Revision, replicas: int) -> ReplicaSpec:
    return ReplicaSpec(
        tenant_id=deployment.tenant_id,
        deployment_id=deployment.id,
        deployment=deployment.name,
        revision=revision.number,
        model_id=deployment.model_id,
        version=revision.version,
        replicas=replicas,
        cpu_millicores=deployment.resources.cpu_millicores,
        memory_bytes=deployment.resources.memory_bytes,
    )


def _endpoints(seen: Observation) -> dict[str, str]:
    states = (s for s in (seen.rolling, seen.serving) if s is not None and s.endpoint and s.ready)
    return {str(s.revision): str(s.endpoint) for s in states}


def _note_load(deployment: Deployment, state: RevisionState, now: datetime) -> None:
    """Keeps the replicas' last report on the deployment for its readers (API, dashboard), written at
    most every ``LOAD_EVERY``: the loop passes every second, and a write each time would be noise."""
    last = deployment.load
    if last is not None and now - last.observed_at < LOAD_EVERY:
        return
    deployment.load = ReplicaLoad(state.in_flight, state.cpu_percent, state.p95_ms, now)


def _fingerprint(d: Deployment) -> tuple[object, ...]:
    fields = (d.status, d.reason, d.serving, d.previous, d.replicas_desired, d.replicas_ready, d.load)
    return (*fields, sorted(d.endpoints.items()), len(d.events))
