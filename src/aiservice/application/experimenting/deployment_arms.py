"""Experiments on a deployment: checked when created, routed by the fronts, promoted by a rollout.

*Routing.* A call to a deployment's stable endpoint is routed by the running experiment on that
deployment: the routing key comes from the experiment's header (the front's short lane does not parse
bodies, so an experiment on a deployment takes a header key only), the arm is picked by the same
snapshot and ``Assigner`` as the model endpoints, and the call goes to that arm's replicas (its pool,
or the serving revision when the arm is the serving version; see ``deploying/experiment_pools``). The
answer names the arm: the ``X-Aiservice-Experiment: <id>; arm=<name>`` header, and for JSON answers of
``predict`` and ``batch-predict`` the same ``experiment`` field the model endpoints return. An arm
whose replicas are not ready yet, or do not answer, is skipped: the serving revision answers the
caller unrouted (the failure is observed against the arm). Shadow arms get a copy off the caller's
path, at most ``max_shadow_in_flight`` at a time.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any

import orjson

from aiservice.application.deploying.deployments import DeploymentChanges, Deployments
from aiservice.application.deploying.experiment_pools import ArmTarget, arm_targets
from aiservice.application.deploying.ports import Forwarded, ReplicaClient, ReplicaUnreachable
from aiservice.application.experimenting.ports import Observation
from aiservice.application.experimenting.traffic import Assignment, ExperimentTraffic
from aiservice.application.ports import UnitOfWork
from aiservice.domain.deployments import Deployment, DeploymentTarget
from aiservice.domain.errors import FieldError, InvalidInput
from aiservice.domain.experiments import KeySource, RoutingKeySpec
from aiservice.domain.tenancy import Principal

log = logging.getLogger(__name__)

EXPERIMENT_HEADER = "X-Aiservice-Experiment"


def deployment_of_experiment(uow: UnitOfWork, name: str, routing: RoutingKeySpec | None) -> Deployment:
    """The live deployment an experiment is created on; a 422 naming the field when it cannot be."""
    deployment = uow.deployments.get_by_name(name)
    if deployment is None:
        raise InvalidInput(
            f"No deployment {name!r} exists.",
            errors=[FieldError("body.deployment", "names no live deployment")],
            extra={"deployment": name},
        )
    if deployment.target != DeploymentTarget.LOCAL:
        raise InvalidInput(
            f"Deployment {name!r} runs on {deployment.target.value}: experiments run on local "
            "deployments only for now.",
            errors=[FieldError("body.deployment", "must be a deployment with target local")],
        )
    if routing is not None and routing.source is KeySource.INPUT:
        raise InvalidInput(
            "An experiment on a deployment reads its routing key from a header: the deployment's "
            "endpoint passes bodies to the replicas unread.",
            errors=[FieldError("body.routingKey.input", 'use {"header": "X-User-Id"} on a deployment')],
        )
    return deployment


def replica_path(kind: str, model_id: str, version: int) -> str:
    if kind == "v2":
        return f"/v2/models/{model_id}/versions/{version}/infer"
    return f"/api/v1/ai/models/{model_id}:{version}/{kind}"


def header_value(assignment: Assignment) -> str:
    return f"{assignment.experiment_id}; arm={assignment.arm}"


Row = tuple[Any, bool]  # a row's prediction (None where the protocol has no label) and whether it failed


def labelled(answer: Forwarded, assignment: Assignment, kind: str) -> tuple[Forwarded, list[Row]]:
    """The answer naming the arm (header, and the ``experiment`` field of JSON predictions), with its
    rows: one per prediction of a batch, else one."""
    headers = (*answer.headers, (EXPERIMENT_HEADER, header_value(assignment)))
    rows: list[Row] = [(None, answer.status >= 500)]
    body = answer.body
    if answer.status == 200 and kind != "v2" and answer.content_type.startswith("application/json"):
        try:
            document = orjson.loads(body)
        except orjson.JSONDecodeError:
            document = None
        label = dict(assignment.label)
        if kind == "predict" and isinstance(document, dict):
            document["experiment"] = label
            rows = [(document.get("prediction"), False)]
            body = orjson.dumps(document)
        elif isinstance(document, dict) and isinstance(document.get("outputs"), list):
            rows = []
            for output in document["outputs"]:
                answered = isinstance(output, dict) and "error" not in output
                if answered:
                    output["experiment"] = label
                rows.append((output.get("prediction"), False) if answered else (None, True))
            body = orjson.dumps(document)
    return Forwarded(answer.status, answer.content_type, body, headers), rows


class DeploymentArms:
    """The fronts' side of experiments on deployments (one per worker, beside ``DeploymentTraffic``)."""

    def __init__(self, traffic: ExperimentTraffic, *, max_shadow_in_flight: int = 16) -> None:
        self._traffic = traffic
        self.max_shadow_in_flight = max_shadow_in_flight
        self.shadow_dropped = 0
        self._shadow_tasks: set[asyncio.Task[None]] = set()

    def choose(
        self, deployment: Deployment, headers: Mapping[str, str]
    ) -> tuple[Assignment, ArmTarget, dict[str, ArmTarget]] | None:
        """The arm that answers this call and where, or None when no experiment routes it (none runs on
        the deployment, or the arm's replicas are not ready)."""
        assignment = self._traffic.assign_deployment(
            deployment.tenant_id, deployment.model_id, deployment.name, headers
        )
        if assignment is None:
            return None
        targets = arm_targets(deployment.endpoints)
        target = targets.get(assignment.arm)
        return None if target is None else (assignment, target, targets)

    async def forward(
        self,
        client: ReplicaClient,
        principal: Principal,
        deployment: Deployment,
        kind: str,
        body: bytes,
        sent: dict[str, str],
        headers: Mapping[str, str],
    ) -> Forwarded | None:
        """The arm's answer, or None when the serving revision should answer unrouted."""
        chosen = self.choose(deployment, headers)
        if chosen is None:
            return None
        assignment, target, targets = chosen
        request_id = sent.get("x-request-id") or uuid.uuid4().hex
        started = time.perf_counter()
        try:
            answer = await client.send(
                target.endpoint, replica_path(kind, deployment.model_id, target.version), body, sent
            )
        except ReplicaUnreachable:
            self._observe(assignment.arm, assignment, request_id, started, [(None, True)], kind)
            return None
        result, rows = labelled(answer, assignment, kind)
        if not 400 <= answer.status < 500:  # the caller's mistake says nothing about the arm
            self._observe(assignment.arm, assignment, request_id, started, rows, kind)
        for arm, _version, _alias in assignment.shadows:
            shadow = targets.get(arm)
            if shadow is not None:
                self._shadow(client, deployment, kind, body, sent, assignment, shadow, request_id)
        return result

    def _shadow(
        self,
        client: ReplicaClient,
        deployment: Deployment,
        kind: str,
        body: bytes,
        sent: dict[str, str],
        assignment: Assignment,
        target: ArmTarget,
        request_id: str,
    ) -> None:
        if len(self._shadow_tasks) >= self.max_shadow_in_flight:
            self.shadow_dropped += 1
            return
        copy = {k: v for k, v in sent.items() if k.lower() != "x-request-id"}
        task = asyncio.create_task(
            self._send_copy(client, deployment, kind, body, copy, assignment, target, request_id)
        )
        self._shadow_tasks.add(task)
        task.add_done_callback(self._shadow_tasks.discard)

    async def _send_copy(
        self,
        client: ReplicaClient,
        deployment: Deployment,
        kind: str,
        body: bytes,
        sent: dict[str, str],
        assignment: Assignment,
        target: ArmTarget,
        request_id: str,
    ) -> None:
        started = time.perf_counter()
        try:
            answer = await client.send(
                target.endpoint, replica_path(kind, deployment.model_id, target.version), body, sent
            )
        except ReplicaUnreachable:
            self._observe(target.arm, assignment, request_id, started, [(None, True)], kind, shadow=True)
            return
        _, rows = labelled(answer, assignment, kind)
        if answer.status >= 400:
            rows = [(None, True) for _ in rows]
        self._observe(target.arm, assignment, request_id, started, rows, kind, shadow=True)

    def _observe(
        self,
        arm: str,
        assignment: Assignment,
        request_id: str,
        started: float,
        rows: list[Row],
        kind: str,
        *,
        shadow: bool = False,
    ) -> None:
        latency = (time.perf_counter() - started) * 1000
        now = datetime.now(UTC)
        batch = kind == "batch-predict" or len(rows) > 1
        for row, (prediction, error) in enumerate(rows):
            self._traffic.recorder.observe(
                Observation(
                    assignment.tenant_id,
                    assignment.experiment_id,
                    arm,
                    f"{request_id}:{row}" if batch else request_id,
                    latency,
                    error,
                    prediction,
                    shadow,
                    now,
                )
            )

    async def drain(self) -> None:
        """Wait for the shadow copies in flight (tests, shutdown)."""
        while self._shadow_tasks:
            await asyncio.gather(*list(self._shadow_tasks), return_exceptions=True)


def winner_rollout(deployments: Deployments) -> Callable[[Principal, str, int], str]:
    """How a deployment experiment's winner is promoted: the deployment rolls out to its version (a
    PATCH through the deployments use case: permission checks, audit and events as usual)."""

    def roll(principal: Principal, name: str, version: int) -> str:
        deployment, _model = deployments.get(principal, name)
        if deployment.revision.version != version:
            deployments.update(principal, name, DeploymentChanges(version=version))
        return f"deployment:{name}"

    return roll
