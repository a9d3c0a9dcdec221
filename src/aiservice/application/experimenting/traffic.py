"""Experiment traffic on the prediction path: which arm answers, what is observed, and shadow copies.

The hot path touches no database: every worker keeps a snapshot of the running experiments by
(tenant, model), rebuilt from the database every ``refresh_s`` (a background task) and changed at once
by the use cases of this process (``follow``). For each arm the snapshot holds a prebuilt
``Assignment``, so routing a request is a dictionary lookup, reading the routing key (a header or an
input field) and one short keyed hash per arm (``Assigner``).

Only a prediction that names the model itself is routed: a pinned ``model:3``, ``model@alias`` or
``options.version``/``options.alias`` is served as asked. A batch is routed per request (one arm for
every row, by the request's header or its first input's field) and observed per row
(``{requestId}:{row}``, the payload log's ids). Shadow arms get a copy of the request in a background
task once the champion has answered: at most ``max_shadow_in_flight`` copies run at a time, and a copy
beyond that is dropped and counted (``shadow_dropped``), so a slow challenger never holds callers up.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any, Protocol

from aiservice.application.audit import current_call
from aiservice.application.experimenting.ports import ExperimentDirectory, Observation
from aiservice.application.experimenting.recorder import ObservationRecorder
from aiservice.application.serving.results import PredictionResult, PredictOptions
from aiservice.domain.errors import DomainError
from aiservice.domain.experiments import Arm, Assigner, Experiment, KeySource
from aiservice.domain.tenancy import Principal

log = logging.getLogger(__name__)

REFRESH_S = 2.0


class Predictor(Protocol):
    async def predict_many(
        self,
        principal: Principal,
        ident: str,
        payloads: list[Any],
        options: PredictOptions,
        *,
        where: str = "inputs",
        fail_fast: bool = False,
        chunk: int | None = None,
        observe: bool = True,
    ) -> list[PredictionResult | DomainError]: ...


@dataclass(frozen=True, slots=True)
class Assignment:
    """The arm a request goes to, prebuilt per arm of a running experiment."""

    tenant_id: str
    experiment_id: str
    arm: str
    selector: str  # ":3" or "@alias": what the router resolves instead of the bare model
    label: Mapping[str, str]  # {"id": ..., "arm": ...}: what the response names
    shadows: tuple[tuple[str, int | None, str | None], ...]  # (arm, version, alias) that get a copy


@dataclass(frozen=True, slots=True)
class _Running:
    experiment: Experiment
    assigner: Assigner
    by_arm: Mapping[str, Assignment]
    source: KeySource | None
    key: str


def _pinned(arm: Arm) -> tuple[int | None, str | None]:
    reference = arm.reference
    if isinstance(reference, str) and reference.isascii() and reference.isdigit():
        reference = int(reference)
    return (reference, None) if isinstance(reference, int) else (None, str(reference))


def _selector(arm: Arm) -> str:
    version, alias = _pinned(arm)
    return f":{version}" if version is not None else f"@{alias}"


def _running(experiment: Experiment) -> _Running:
    shadows = tuple((arm.name, *_pinned(arm)) for arm in experiment.shadow_arms())
    by_arm = {
        arm.name: Assignment(
            experiment.tenant_id,
            experiment.id,
            arm.name,
            _selector(arm),
            {"id": experiment.id, "arm": arm.name},
            shadows if arm.name == experiment.champion else (),
        )
        for arm in experiment.arms
    }
    spec = experiment.routing_key
    return _Running(
        experiment,
        experiment.assigner(),
        by_arm,
        None if spec is None else spec.source,
        "" if spec is None else spec.name,
    )


class ExperimentTraffic:
    def __init__(
        self,
        directory: ExperimentDirectory,
        recorder: ObservationRecorder,
        *,
        refresh_s: float = REFRESH_S,
        max_shadow_in_flight: int = 16,
        on_shadow_dropped: Callable[[], None] = lambda: None,
    ) -> None:
        self._directory = directory
        self.recorder = recorder
        self.refresh_s = refresh_s
        self.max_shadow_in_flight = max_shadow_in_flight
        self._on_shadow_dropped = on_shadow_dropped
        self._running: dict[tuple[str, str], _Running] = {}
        self._shadow_tasks: set[asyncio.Task[None]] = set()
        self._followed = 0  # changes made through this process: a refresh that raced one is dropped
        self.shadow_dropped = 0

    # -- the snapshot ------------------------------------------------------------------------------

    def refresh(self) -> None:
        """Rebuild the snapshot from the database (the background task, every ``refresh_s``)."""
        followed = self._followed
        running: dict[tuple[str, str], _Running] = {}
        for experiment in self._directory.running():
            try:
                running[(experiment.tenant_id, experiment.model_id)] = _running(experiment)
            except DomainError:  # every weight 0: nothing to route by
                log.warning("experiment %s has no arm to route to", experiment.id)
        if followed == self._followed:  # else it may predate a change this process made: next time
            self._running = running

    def follow(self, experiment: Experiment) -> None:
        """An experiment changed through this process: route by its new state now."""
        self._followed += 1
        key = (experiment.tenant_id, experiment.model_id)
        current = self._running.get(key)
        if experiment.active:
            self._running = {**self._running, key: _running(experiment)}
        elif current is not None and current.experiment.id == experiment.id:
            self._running = {k: v for k, v in self._running.items() if k != key}

    def forget_tenant(self, tenant_id: str) -> None:
        self._running = {k: v for k, v in self._running.items() if k[0] != tenant_id}

    def running(self, tenant_id: str, model_id: str) -> Experiment | None:
        found = self._running.get((tenant_id, model_id))
        return None if found is None else found.experiment

    # -- the hot path ------------------------------------------------------------------------------

    def assign(
        self, tenant_id: str, model_id: str, ident: str, options: PredictOptions, payloads: Sequence[Any]
    ) -> Assignment | None:
        """The arm for this request, or None when no experiment routes it."""
        if not self._running:
            return None
        running = self._running.get((tenant_id, model_id))
        if running is None or options.version is not None or options.alias or ":" in ident or "@" in ident:
            return None
        if running.experiment.deployment is not None:  # it routes its deployment's endpoints only
            return None
        key: str | None = None
        if running.source is KeySource.HEADER:
            headers = options.headers
            key = None if headers is None else headers.get(running.key)
        elif running.source is KeySource.INPUT and payloads and isinstance(payloads[0], dict):
            value = payloads[0].get(running.key)
            key = None if value is None else str(value)
        return running.by_arm[running.assigner.assign(key).name]

    def assign_deployment(
        self, tenant_id: str, model_id: str, deployment: str, headers: Mapping[str, str]
    ) -> Assignment | None:
        """The arm for a call to ``deployment``'s endpoints (its routing key is a header, if any)."""
        if not self._running:
            return None
        running = self._running.get((tenant_id, model_id))
        if running is None or running.experiment.deployment != deployment:
            return None
        key = None
        if running.source is KeySource.HEADER:
            key = headers.get(running.key) or headers.get(running.key.lower())
        return running.by_arm[running.assigner.assign(key).name]

    def routing_input(self, tenant_id: str, model_id: str) -> str | None:
        """The input field (a v2 input tensor) the model's running experiment keys on, if it does."""
        running = self._running.get((tenant_id, model_id)) if self._running else None
        return running.key if running is not None and running.source is KeySource.INPUT else None

    def observed(
        self,
        predictor: Predictor,
        principal: Principal,
        ident: str,
        payloads: list[Any],
        options: PredictOptions,
        where: str,
        assignment: Assignment,
        results: Sequence[PredictionResult | DomainError],
        latency_ms: float,
    ) -> None:
        """The routed request was answered: name the arm in its results, observe each answered row,
        and send the shadow arms their copies."""
        request_id = _request_id()
        batch = where != "input"
        now = datetime.now(UTC)
        for row, result in enumerate(results):
            if isinstance(result, PredictionResult):
                result.experiment = assignment.label
                self.recorder.observe(
                    Observation(
                        assignment.tenant_id,
                        assignment.experiment_id,
                        assignment.arm,
                        f"{request_id}:{row}" if batch else request_id,
                        latency_ms,
                        False,
                        result.prediction,
                        False,
                        now,
                    )
                )
        for arm, version, alias in assignment.shadows:
            if len(self._shadow_tasks) >= self.max_shadow_in_flight:
                self.shadow_dropped += 1
                self._on_shadow_dropped()
                continue
            pinned = replace(options, version=version, alias=alias, headers=None)
            task = asyncio.create_task(
                self._shadow(
                    predictor, principal, ident, payloads, pinned, where, assignment, arm, request_id
                )
            )
            self._shadow_tasks.add(task)
            task.add_done_callback(self._shadow_tasks.discard)

    def answered(
        self, assignment: Assignment, rows: int, latency_ms: float, predictions: Sequence[Any] | None = None
    ) -> None:
        """A routed call answered outside ``/predict``'s shaping (the v2 protocol): observed per row,
        with its prediction (label or value) when the transport gives them."""
        request_id, now = _request_id(), datetime.now(UTC)
        for row in range(rows):
            self.recorder.observe(
                Observation(
                    assignment.tenant_id,
                    assignment.experiment_id,
                    assignment.arm,
                    f"{request_id}:{row}" if rows > 1 else request_id,
                    latency_ms,
                    False,
                    None if predictions is None else predictions[row],
                    False,
                    now,
                )
            )

    def failed(self, assignment: Assignment, latency_ms: float) -> None:
        """The routed arm failed to answer (the model raised, timed out): an error observation."""
        self.recorder.observe(
            Observation(
                assignment.tenant_id,
                assignment.experiment_id,
                assignment.arm,
                _request_id(),
                latency_ms,
                True,
                None,
                False,
                datetime.now(UTC),
            )
        )

    async def _shadow(
        self,
        predictor: Predictor,
        principal: Principal,
        ident: str,
        payloads: list[Any],
        options: PredictOptions,
        where: str,
        assignment: Assignment,
        arm: str,
        request_id: str,
    ) -> None:
        started = time.perf_counter()
        batch = where != "input"
        try:
            results = await predictor.predict_many(
                principal, ident, payloads, options, where=where, fail_fast=not batch, observe=False
            )
        except Exception:  # the challenger failed: observed as such, never seen by the caller
            latency = (time.perf_counter() - started) * 1000
            self.recorder.observe(
                Observation(
                    assignment.tenant_id,
                    assignment.experiment_id,
                    arm,
                    request_id,
                    latency,
                    True,
                    None,
                    True,
                    datetime.now(UTC),
                )
            )
            return
        latency = (time.perf_counter() - started) * 1000
        now = datetime.now(UTC)
        for row, result in enumerate(results):
            answered = isinstance(result, PredictionResult)
            self.recorder.observe(
                Observation(
                    assignment.tenant_id,
                    assignment.experiment_id,
                    arm,
                    f"{request_id}:{row}" if batch else request_id,
                    latency,
                    not answered,
                    result.prediction if isinstance(result, PredictionResult) else None,
                    True,
                    now,
                )
            )

    def shadow(
        self, assignment: Assignment, run: Callable[[int | None, str | None], Awaitable[Sequence[Any]]]
    ) -> None:
        """Send the shadow arms their copies through ``run(version, alias)``: a transport's own call on
        that arm (the v2 protocol's), giving one prediction per row. Off the caller's path and bounded
        as ``observed``'s copies are."""
        request_id = _request_id()
        for arm, version, alias in assignment.shadows:
            if len(self._shadow_tasks) >= self.max_shadow_in_flight:
                self.shadow_dropped += 1
                self._on_shadow_dropped()
                continue
            task = asyncio.create_task(self._shadow_call(run(version, alias), assignment, arm, request_id))
            self._shadow_tasks.add(task)
            task.add_done_callback(self._shadow_tasks.discard)

    async def _shadow_call(
        self, call: Awaitable[Sequence[Any]], assignment: Assignment, arm: str, request_id: str
    ) -> None:
        started = time.perf_counter()
        predictions: Sequence[Any] | None
        try:
            predictions = await call
        except Exception:  # the challenger failed: observed as such, never seen by the caller
            predictions = None
        latency, now = (time.perf_counter() - started) * 1000, datetime.now(UTC)
        answers = [None] if predictions is None else predictions
        for row, prediction in enumerate(answers):
            self.recorder.observe(
                Observation(
                    assignment.tenant_id,
                    assignment.experiment_id,
                    arm,
                    f"{request_id}:{row}" if len(answers) > 1 else request_id,
                    latency,
                    predictions is None,
                    prediction,
                    True,
                    now,
                )
            )

    async def drain(self) -> None:
        """Wait for the shadow copies in flight (tests, shutdown)."""
        while self._shadow_tasks:
            await asyncio.gather(*list(self._shadow_tasks), return_exceptions=True)


def _request_id() -> str:
    call = current_call()
    return call.request_id if call is not None and call.request_id else uuid.uuid4().hex
