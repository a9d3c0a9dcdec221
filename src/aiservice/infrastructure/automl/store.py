"""AutoML studies in the service's database (``automl_studies``, migration 0018); every end of a study is
conditional on it not having ended, so a cancel and the runner never both end it."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from aiservice.application.automl import Study
from aiservice.infrastructure.db.engine import writer_engine
from aiservice.infrastructure.db.tables import automl_studies as t

_RUNNING = ("queued", "running")


class SqlAlchemyStudyStore:
    def __init__(self, engine: Engine) -> None:
        self._engine = engine
        self._writer = writer_engine(engine)  # write transactions begin IMMEDIATE on SQLite

    def add(self, study: Study) -> None:
        with self._writer.begin() as conn:
            conn.execute(
                t.insert().values(
                    tenant_id=study.tenant_id,
                    id=study.id,
                    model_id=study.model_id,
                    status=study.status,
                    request=study.request,
                    trials=study.trials,
                    result=study.result,
                    error=study.error,
                    version=study.version,
                    created_by=study.created_by,
                    created_at=study.created_at,
                    started_at=study.started_at,
                    finished_at=study.finished_at,
                    updated_at=study.updated_at,
                )
            )

    def get(self, tenant_id: str, study_id: str) -> Study | None:
        with self._engine.connect() as conn:
            row = conn.execute(sa.select(t).where(t.c.tenant_id == tenant_id, t.c.id == study_id)).first()
        if row is None:
            return None
        return Study(
            id=row.id,
            tenant_id=row.tenant_id,
            model_id=row.model_id,
            status=row.status,
            request=row.request,
            trials=list(row.trials or []),
            created_at=row.created_at,
            updated_at=row.updated_at,
            result=row.result,
            error=row.error,
            version=row.version,
            created_by=row.created_by,
            started_at=row.started_at,
            finished_at=row.finished_at,
        )

    def _where(self, tenant_id: str, study_id: str, *statuses: str) -> Any:
        return sa.and_(t.c.tenant_id == tenant_id, t.c.id == study_id, t.c.status.in_(statuses))

    def start(self, tenant_id: str, study_id: str, at: datetime) -> bool:
        with self._writer.begin() as conn:
            done = conn.execute(
                t.update()
                .where(self._where(tenant_id, study_id, "queued"))
                .values(status="running", started_at=at, updated_at=at)
            )
            return bool(done.rowcount)

    def add_trial(self, tenant_id: str, study_id: str, trial: dict[str, Any], at: datetime) -> bool:
        with self._writer.begin() as conn:
            row = conn.execute(
                sa.select(t.c.trials).where(self._where(tenant_id, study_id, "running")).with_for_update()
            ).first()
            if row is None:
                return False
            trials = [*(row.trials or []), trial]
            done = conn.execute(
                t.update()
                .where(self._where(tenant_id, study_id, "running"))
                .values(trials=trials, updated_at=at)
            )
            return bool(done.rowcount)

    def finish(
        self,
        tenant_id: str,
        study_id: str,
        status: str,
        at: datetime,
        result: dict[str, Any] | None = None,
        error: str | None = None,
        version: int | None = None,
    ) -> bool:
        with self._writer.begin() as conn:
            done = conn.execute(
                t.update()
                .where(self._where(tenant_id, study_id, *_RUNNING))
                .values(
                    status=status,
                    result=result,
                    error=error,
                    version=version,
                    finished_at=at,
                    updated_at=at,
                )
            )
            return bool(done.rowcount)
