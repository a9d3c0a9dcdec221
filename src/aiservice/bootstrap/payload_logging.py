"""The payload logging parts: the recorder the dataplane offers predictions to, its flushing task (in
every worker: each has its own queue), the retention purge (in the host worker only) and the use cases."""

from __future__ import annotations

import logging
from dataclasses import dataclass

from sqlalchemy.engine import Engine

from aiservice.application.outbox import EventBus
from aiservice.application.payload_logging.logs import PayloadLogs
from aiservice.application.payload_logging.ports import PayloadLogUnitOfWorkFactory
from aiservice.application.payload_logging.recorder import PayloadRecorder
from aiservice.application.periodic import PeriodicTask
from aiservice.application.ports import ArtifactStore, OutboxMessage
from aiservice.domain.clock import utcnow
from aiservice.infrastructure.db.payload_log_repositories import SqlAlchemyPayloadLogStore
from aiservice.infrastructure.observability.metrics import ServiceMetrics
from aiservice.infrastructure.payload_logs.parquet_files import ParquetPayloadFiles

log = logging.getLogger(__name__)

FLUSH_INTERVAL_S = 1.0
PURGE_INTERVAL_S = 3600.0


@dataclass
class PayloadLogging:
    recorder: PayloadRecorder
    logs: PayloadLogs
    flusher: PeriodicTask  # writes the queue every second (sooner when a batch is ready)
    purger: PeriodicTask  # the retention purge, hourly, in the host worker only
    files: ParquetPayloadFiles  # the Parquet sink's files, in the artifact store

    def start(self, host: bool) -> None:
        self.flusher.start()
        if host:
            self.purger.start()

    def close(self) -> None:
        self.flusher.stop()
        self.purger.stop()
        try:
            self.recorder.flush()  # what is still queued
        except Exception:
            log.warning("payload log: queued rows not written at shutdown", exc_info=True)


def payload_logging_parts(
    engine: Engine,
    uow: PayloadLogUnitOfWorkFactory,
    metrics: ServiceMetrics,
    bus: EventBus,
    artifacts: ArtifactStore,
) -> PayloadLogging:
    files = ParquetPayloadFiles(artifacts)
    store = SqlAlchemyPayloadLogStore(engine, files)
    recorder = PayloadRecorder(
        store,
        on_dropped=lambda n: metrics.payload_logs_dropped.inc(n),
        on_written=lambda n: metrics.payload_logs_written.inc(n),
    )
    logs = PayloadLogs(uow, store, utcnow, on_policy=recorder.policy_changed)
    flusher = PeriodicTask("payload-log-flush", FLUSH_INTERVAL_S, recorder.tick)
    recorder.wake = flusher.wake

    def model_deleted(message: OutboxMessage) -> None:
        logs.forget_model(message.tenant_id, message.aggregate_id)

    bus.subscribe("ModelDeleted", model_deleted)  # on the relay's lease holder, once per event
    purger = PeriodicTask("payload-log-purge", PURGE_INTERVAL_S, logs.purge)
    return PayloadLogging(recorder, logs, flusher, purger, files)
