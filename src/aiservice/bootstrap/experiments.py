"""The experiment parts: the use cases, the routing snapshot and observation recorder every worker
keeps (refreshed and flushed by a background task each), and the controller (host worker only)."""

from __future__ import annotations

import logging
from dataclasses import dataclass

from sqlalchemy.engine import Engine

from aiservice.application.experimenting.controller import INTERVAL_S, ExperimentController
from aiservice.application.experimenting.experiments import Experiments
from aiservice.application.experimenting.ports import ExperimentUnitOfWorkFactory
from aiservice.application.experimenting.recorder import ObservationRecorder
from aiservice.application.experimenting.traffic import ExperimentTraffic
from aiservice.application.outbox import EventBus
from aiservice.application.periodic import PeriodicTask
from aiservice.application.ports import OutboxMessage
from aiservice.application.versions import ModelVersions
from aiservice.domain.clock import utcnow
from aiservice.infrastructure.db.experiment_repositories import (
    SqlAlchemyExperimentDirectory,
    SqlAlchemyObservationStore,
)
from aiservice.infrastructure.observability.metrics import ServiceMetrics

log = logging.getLogger(__name__)

FLUSH_INTERVAL_S = 1.0


@dataclass
class ExperimentParts:
    experiments: Experiments
    traffic: ExperimentTraffic
    recorder: ObservationRecorder
    controller: ExperimentController
    background: PeriodicTask  # every worker: writes observations, refreshes the routing snapshot
    control: PeriodicTask  # the controller, in the host worker only

    def start(self, host: bool) -> None:
        self.background.start()
        if host:
            self.control.start()

    def close(self) -> None:
        self.control.stop()
        self.background.stop()
        try:
            self.recorder.flush()
        except Exception:
            log.warning("experiments: queued observations not written at shutdown", exc_info=True)


def experiment_parts(
    engine: Engine,
    uow: ExperimentUnitOfWorkFactory,
    versions: ModelVersions,
    metrics: ServiceMetrics,
    bus: EventBus,
) -> ExperimentParts:
    directory = SqlAlchemyExperimentDirectory(engine)
    recorder = ObservationRecorder(
        SqlAlchemyObservationStore(engine),
        on_dropped=lambda n: metrics.experiment_observations_dropped.inc(n),
    )
    traffic = ExperimentTraffic(
        directory, recorder, on_shadow_dropped=lambda: metrics.experiment_shadow_dropped.inc()
    )
    experiments = Experiments(uow, utcnow, versions, on_change=traffic.follow)
    controller = ExperimentController(directory, uow, experiments, utcnow)

    def deployment_deleted(message: OutboxMessage) -> None:
        data = message.data
        experiments.deployment_deleted(message.tenant_id, str(data["model_id"]), str(data["name"]))

    bus.subscribe("DeploymentDeleted", deployment_deleted)  # on the relay's lease holder, once per event

    def tick() -> None:
        recorder.flush()
        traffic.refresh()

    background = PeriodicTask("experiment-traffic", FLUSH_INTERVAL_S, tick)
    recorder.wake = background.wake
    control = PeriodicTask("experiment-controller", INTERVAL_S, controller.tick, run_at_start=False)
    parts = ExperimentParts(experiments, traffic, recorder, controller, background, control)
    return parts
