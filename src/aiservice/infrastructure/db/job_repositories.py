"""Training jobs in SQL: the tenant-scoped repository and the runners' cross-tenant queue."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from aiservice.domain.pagination import Page
from aiservice.domain.training import (
    DatasetConfig,
    JobEvent,
    JobFailure,
    JobKind,
    JobStatus,
    ResourceConfig,
    TrainingConfig,
    TrainingJob,
)
from aiservice.infrastructure.db.engine import writer_engine
from aiservice.infrastructure.db.keyset import newest_first
from aiservice.infrastructure.db.tables import training_job_events, training_jobs


class SqlAlchemyTrainingJobRepository:
    def __init__(self, conn: Connection, tenant_id: str) -> None:
        self._conn = conn
        self._tenant = tenant_id

    def add(self, job: TrainingJob) -> None:
        self._conn.execute(training_jobs.insert().values(**_job_row(job)))

    def get(self, job_id: str, *, for_update: bool = False) -> TrainingJob | None:
        stmt = sa.select(training_jobs).where(
            training_jobs.c.tenant_id == self._tenant, training_jobs.c.id == job_id
        )
        if for_update:
            stmt = stmt.with_for_update()  # PostgreSQL row lock; SQLite's writer lock covers it
        row = self._conn.execute(stmt).mappings().first()
        return _job(row) if row else None

    def unfinished(self) -> list[TrainingJob]:
        waiting = (JobStatus.QUEUED.value, JobStatus.RUNNING.value)
        stmt = sa.select(training_jobs).where(
            training_jobs.c.tenant_id == self._tenant, training_jobs.c.status.in_(waiting)
        )
        return [_job(r) for r in self._conn.execute(stmt.order_by(training_jobs.c.created_at)).mappings()]

    def page(
        self,
        model_id: str | None,
        status: JobStatus | None,
        limit: int,
        cursor: str | None,
        *,
        kind: JobKind | None = None,
        study_id: str | None = None,
    ) -> Page[TrainingJob]:
        stmt = sa.select(training_jobs).where(training_jobs.c.tenant_id == self._tenant)
        if model_id is not None:
            stmt = stmt.where(training_jobs.c.model_id == model_id)
        if status is not None:
            stmt = stmt.where(training_jobs.c.status == status.value)
        study = training_jobs.c.automl_study_id
        if kind == "training":
            stmt = stmt.where(study.is_(None))
        elif kind == "trial":
            stmt = stmt.where(study.is_not(None))
        if study_id is not None:
            stmt = stmt.where(study == study_id)
        created, ident = training_jobs.c.created_at, training_jobs.c.id
        return newest_first(self._conn, stmt, created, ident, limit, cursor, _job)

    def save(self, job: TrainingJob) -> None:
        row = _job_row(job)
        immutable = ("tenant_id", "id", "model_id", "training", "dataset", "resources", "created_at")
        for key in (*immutable, "automl_study_id"):
            del row[key]
        self._conn.execute(
            training_jobs.update()
            .where(training_jobs.c.tenant_id == self._tenant, training_jobs.c.id == job.id)
            .values(**row)
        )

    def append_event(self, job_id: str, type: str, data: dict[str, Any], at: datetime) -> int:
        where = sa.and_(training_jobs.c.tenant_id == self._tenant, training_jobs.c.id == job_id)
        # The counter lives on the job row: incrementing it takes that row's lock, so concurrent
        # writers of one job's events get distinct numbers.
        seq = self._conn.execute(
            training_jobs.update()
            .where(where)
            .values(last_event_seq=training_jobs.c.last_event_seq + 1)
            .returning(training_jobs.c.last_event_seq)
        ).scalar_one()
        self._conn.execute(
            training_job_events.insert().values(
                tenant_id=self._tenant, job_id=job_id, seq=seq, type=type, data=data, created_at=at
            )
        )
        return int(seq)

    def events_after(self, job_id: str, seq: int, limit: int) -> list[JobEvent]:
        rows = self._conn.execute(
            sa.select(training_job_events)
            .where(
                training_job_events.c.tenant_id == self._tenant,
                training_job_events.c.job_id == job_id,
                training_job_events.c.seq > seq,
            )
            .order_by(training_job_events.c.seq)
            .limit(limit)
        ).mappings()
        return [
            JobEvent(
                job_id=r["job_id"], seq=r["seq"], type=r["type"], data=r["data"], created_at=r["created_at"]
            )
            for r in rows
        ]


class SqlAlchemyJobQueue:
    """Claims are one conditional UPDATE (status still queued), so two runners never share a job."""

    def __init__(self, engine: Engine) -> None:
        self._reader = engine
        self._writer = writer_engine(engine)

    def claim_next(self, runner_id: str, now: datetime) -> TrainingJob | None:
        with self._writer.begin() as conn:
            for _ in range(5):  # another runner may win the race for the oldest; try the next
                row = (
                    conn.execute(
                        sa.select(training_jobs.c.tenant_id, training_jobs.c.id)
                        .where(training_jobs.c.status == JobStatus.QUEUED.value)
                        .order_by(training_jobs.c.created_at, training_jobs.c.id)
                        .limit(1)
                    )
                    .mappings()
                    .first()
                )
                if row is None:
                    return None
                key = sa.and_(training_jobs.c.tenant_id == row["tenant_id"], training_jobs.c.id == row["id"])
                claimed = conn.execute(
                    training_jobs.update()
                    .where(key, training_jobs.c.status == JobStatus.QUEUED.value)
                    .values(
                        status=JobStatus.RUNNING.value,
                        runner_id=runner_id,
                        started_at=now,
                        updated_at=now,
                        heartbeat_at=now,
                    )
                ).rowcount
                if claimed == 1:
                    job = conn.execute(sa.select(training_jobs).where(key)).mappings().one()
                    return _job(job)
        return None

    def heartbeat(self, runner_id: str, job_ids: list[str], now: datetime) -> None:
        if not job_ids:
            return
        with self._writer.begin() as conn:
            conn.execute(
                training_jobs.update()
                .where(
                    training_jobs.c.id.in_(job_ids),
                    training_jobs.c.runner_id == runner_id,
                    training_jobs.c.status == JobStatus.RUNNING.value,
                )
                .values(heartbeat_at=now)
            )

    def stale_running(self, before: datetime) -> list[tuple[str, str]]:
        with self._reader.connect() as conn:
            rows = conn.execute(
                sa.select(training_jobs.c.tenant_id, training_jobs.c.id).where(
                    training_jobs.c.status == JobStatus.RUNNING.value,
                    sa.or_(training_jobs.c.heartbeat_at.is_(None), training_jobs.c.heartbeat_at < before),
                )
            ).all()
        return [(r[0], r[1]) for r in rows]


def _job_row(job: TrainingJob) -> dict[str, Any]:
    return {
        "tenant_id": job.tenant_id,
        "id": job.id,
        "model_id": job.model_id,
        "status": job.status.value,
        "training": job.training.to_json(),
        "dataset": job.dataset.to_json(),
        "resources": job.resources.to_json(),
        "created_by": job.created_by,
        "created_at": job.created_at,
        "started_at": job.started_at,
        "finished_at": job.finished_at,
        "updated_at": job.updated_at,
        "progress": job.progress,
        "epoch": job.epoch,
        "epochs": job.epochs,
        "step": job.step,
        "steps": job.steps,
        "metrics": job.metrics,
        "history": job.history,
        "failure": job.failure.to_json() if job.failure else None,
        "version": job.version,
        "device": job.device,
        "dataset_fingerprint": job.dataset_fingerprint,
        "runner_id": job.runner_id,
        "heartbeat_at": job.heartbeat_at,
        "traceparent": job.traceparent,
        "automl_study_id": (job.training.automl_trial or {}).get("studyId"),
    }


def _job(row: Any) -> TrainingJob:
    failure = row["failure"]
    return TrainingJob(
        tenant_id=row["tenant_id"],
        id=row["id"],
        model_id=row["model_id"],
        status=JobStatus(row["status"]),
        training=TrainingConfig.from_json(row["training"]),
        dataset=DatasetConfig.from_json(row["dataset"]),
        resources=ResourceConfig.from_json(row["resources"]),
        created_by=row["created_by"],
        created_at=row["created_at"],
        started_at=row["started_at"],
        finished_at=row["finished_at"],
        updated_at=row["updated_at"],
        progress=row["progress"],
        epoch=row["epoch"],
        epochs=row["epochs"],
        step=row["step"],
        steps=row["steps"],
        metrics=row["metrics"] or {},
        history=row["history"] or [],
        failure=JobFailure(failure["stage"], failure["message"]) if failure else None,
        version=row["version"],
        device=row["device"],
        dataset_fingerprint=row["dataset_fingerprint"] or [],
        runner_id=row["runner_id"],
        heartbeat_at=row["heartbeat_at"],
        traceparent=row["traceparent"],
    )
