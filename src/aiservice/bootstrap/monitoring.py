"""The drift monitoring parts: the use cases (with the domain classifier and the drift score gauge),
the scheduled checks (a periodic duty of the host worker) and the cleanup when a model is deleted."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from sqlalchemy.engine import Engine

from aiservice.application.deploying.deployments import Deployments
from aiservice.application.experimenting.experiments import Experiments
from aiservice.application.inference import InferenceService
from aiservice.application.monitoring.actions import MonitoringActions
from aiservice.application.monitoring.monitor import DriftMonitoring
from aiservice.application.monitoring.ports import MonitoringUnitOfWorkFactory
from aiservice.application.monitoring.reference import ReferenceDatasets
from aiservice.application.outbox import EventBus
from aiservice.application.periodic import PeriodicTask
from aiservice.application.ports import OutboxMessage
from aiservice.application.training import TrainingJobs
from aiservice.domain.clock import utcnow
from aiservice.infrastructure.datasets.locator import DatasetLocator
from aiservice.infrastructure.datasets.samples import StoredDatasetSamples
from aiservice.infrastructure.datasets.store import DatasetStore
from aiservice.infrastructure.db.monitoring_repositories import SqlAlchemyMonitoringSchedule
from aiservice.infrastructure.monitoring.domain_classifier import SklearnDomainClassifier
from aiservice.infrastructure.monitoring.held_out import InferenceHeldOutScorer
from aiservice.infrastructure.observability.metrics import ServiceMetrics

log = logging.getLogger(__name__)

SCHEDULE_INTERVAL_S = 60.0  # how often the host worker looks for due checks


@dataclass
class Monitoring:
    monitor: DriftMonitoring
    schedule: SqlAlchemyMonitoringSchedule
    scheduler: PeriodicTask  # the due scheduled checks, every minute, in the host worker only
    references: ReferenceDatasets  # reference rows sampled from an uploaded dataset

    def run_scheduled(self) -> int:
        return self.monitor.run_scheduled(self.schedule)

    # the closed loop's comparisons run on this thread, off the relay's; the serving loop they predict on
    comparisons: ThreadPoolExecutor = field(
        default_factory=lambda: ThreadPoolExecutor(max_workers=1, thread_name_prefix="monitoring-actions")
    )
    serving_loop: asyncio.AbstractEventLoop | None = None

    def start(self, host: bool) -> None:
        try:
            self.serving_loop = asyncio.get_running_loop()
        except RuntimeError:
            self.serving_loop = None
        if host:
            self.scheduler.start()

    def close(self) -> None:
        self.scheduler.stop()
        self.comparisons.shutdown(wait=False, cancel_futures=True)


def monitoring_parts(
    engine: Engine,
    uow: MonitoringUnitOfWorkFactory,
    metrics: ServiceMetrics,
    bus: EventBus,
    datasets: DatasetStore,
) -> Monitoring:
    monitor = DriftMonitoring(uow, utcnow, metrics=metrics, classifier=SklearnDomainClassifier())
    schedule = SqlAlchemyMonitoringSchedule(engine)

    def model_deleted(message: OutboxMessage) -> None:
        monitor.forget_model(message.tenant_id, message.aggregate_id)

    bus.subscribe("ModelDeleted", model_deleted)  # on the relay's lease holder, once per event
    scheduler = PeriodicTask(
        "drift-schedule", SCHEDULE_INTERVAL_S, lambda: monitor.run_scheduled(schedule), run_at_start=False
    )
    references = ReferenceDatasets(uow, StoredDatasetSamples(datasets))
    return Monitoring(monitor, schedule, scheduler, references)


def closing_the_loop(
    parts: Monitoring,
    uow: MonitoringUnitOfWorkFactory,
    bus: EventBus,
    training: TrainingJobs,
    experiments: Experiments,
    deployments: Deployments,
    datasets: DatasetStore,
    locator: DatasetLocator,
    inference: InferenceService,
) -> MonitoringActions:
    """The policies' automatic actions (``monitoring/actions.py``): after each check, and when a
    retraining job succeeds (on the relay's lease holder, once per event)."""

    def dataset_format(tenant_id: str, name: str) -> str | None:
        found = datasets.get(tenant_id, name)
        return None if found is None else found.format

    actions = MonitoringActions(
        uow,
        utcnow,
        training,
        experiments,
        deployments,
        dataset_format,
        scorer=InferenceHeldOutScorer(inference, locator, lambda: parts.serving_loop),
        run_later=lambda work: _submit(parts.comparisons, work),
    )
    parts.monitor.actions = actions

    def job_succeeded(message: OutboxMessage) -> None:
        model_id, version = str(message.data["model_id"]), int(message.data["version"])
        actions.job_succeeded(message.tenant_id, message.aggregate_id, model_id, version)

    bus.subscribe("TrainingJobSucceeded", job_succeeded)
    return actions


def _submit(pool: ThreadPoolExecutor, work: Callable[[], None]) -> None:
    def logged() -> None:
        try:
            work()
        except Exception:
            log.warning("a monitoring action failed", exc_info=True)

    pool.submit(logged)
