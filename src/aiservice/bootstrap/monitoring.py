"""The drift monitoring parts: the use cases (with the domain classifier and the drift score gauge),
the scheduled checks (a periodic duty of the host worker) and the cleanup when a model is deleted."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy.engine import Engine

from aiservice.application.monitoring.monitor import DriftMonitoring
from aiservice.application.monitoring.ports import MonitoringUnitOfWorkFactory
from aiservice.application.outbox import EventBus
from aiservice.application.periodic import PeriodicTask
from aiservice.application.ports import OutboxMessage
from aiservice.domain.clock import utcnow
from aiservice.infrastructure.db.monitoring_repositories import SqlAlchemyMonitoringSchedule
from aiservice.infrastructure.monitoring.domain_classifier import SklearnDomainClassifier
from aiservice.infrastructure.observability.metrics import ServiceMetrics

SCHEDULE_INTERVAL_S = 60.0  # how often the host worker looks for due checks


@dataclass
class Monitoring:
    monitor: DriftMonitoring
    schedule: SqlAlchemyMonitoringSchedule
    scheduler: PeriodicTask  # the due scheduled checks, every minute, in the host worker only

    def run_scheduled(self) -> int:
        return self.monitor.run_scheduled(self.schedule)

    def start(self, host: bool) -> None:
        if host:
            self.scheduler.start()

    def close(self) -> None:
        self.scheduler.stop()


def monitoring_parts(
    engine: Engine, uow: MonitoringUnitOfWorkFactory, metrics: ServiceMetrics, bus: EventBus
) -> Monitoring:
    monitor = DriftMonitoring(uow, utcnow, metrics=metrics, classifier=SklearnDomainClassifier())
    schedule = SqlAlchemyMonitoringSchedule(engine)

    def model_deleted(message: OutboxMessage) -> None:
        monitor.forget_model(message.tenant_id, message.aggregate_id)

    bus.subscribe("ModelDeleted", model_deleted)  # on the relay's lease holder, once per event
    scheduler = PeriodicTask(
        "drift-schedule", SCHEDULE_INTERVAL_S, lambda: monitor.run_scheduled(schedule), run_at_start=False
    )
    return Monitoring(monitor, schedule, scheduler)
