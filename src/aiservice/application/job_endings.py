"""How a training job ends, in the unit of work that ends it: shared by the jobs' own use cases and by
deleting their model, which cancels them."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from aiservice.application.ports import UnitOfWork
from aiservice.domain.events import TrainingJobCancelled
from aiservice.domain.training import JobFailure, JobStatus, TrainingJob


def end_job(
    uow: UnitOfWork,
    job: TrainingJob,
    status: JobStatus,
    now: datetime,
    failure: JobFailure | None,
    extra: dict[str, Any] | None = None,
) -> None:
    """Record the final status and its entry in the job's event stream."""
    job.status = status
    job.failure = failure
    job.finished_at = now
    job.updated_at = now
    uow.jobs.save(job)
    data: dict[str, Any] = {"status": status.value, **(extra or {})}
    if failure is not None:
        data["error"] = failure.to_json()
    uow.jobs.append_event(job.id, "status", data, now)


def cancel_job(uow: UnitOfWork, job: TrainingJob, now: datetime) -> None:
    """Queued, it never starts; running, its runner stops the worker when it next looks."""
    end_job(uow, job, JobStatus.CANCELLED, now, None)
    uow.record(TrainingJobCancelled(tenant_id=job.tenant_id, aggregate_id=job.id, model_id=job.model_id))
