"""AutoML studies in the service's database (``automl_studies``, migration 0018), inside the unit of work
so each change of a study and its event commit together. Every end of a study is conditional on it not
having ended, so a cancel, its runner and the recovery of a silent study never both end it."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from aiservice.application.automl import Study
from aiservice.domain.pagination import Page
from aiservice.infrastructure.db.keyset import newest_first
from aiservice.infrastructure.db.tables import automl_studies as t

_RUNNING = ("queued", "running")


class SqlAlchemyStudyRepository:
    def __init__(self, conn: Connection, tenant_id: str) -> None:
        self._conn = conn
        self._tenant_id = tenant_id

    def add(self, study: Study) -> None:
        self._conn.execute(
            t.insert().values(
                tenant_id=self._tenant_id,
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

    def get(self, study_id: str, *, for_update: bool = False) -> Study | None:
        query = sa.select(t).where(t.c.tenant_id == self._tenant_id, t.c.id == study_id)
        row = self._conn.execute(query.with_for_update() if for_update else query).mappings().first()
        return None if row is None else _study(row)

    def page(self, model_id: str, limit: int, cursor: str | None) -> Page[Study]:
        """The model's studies, newest first."""
        query = sa.select(t).where(t.c.tenant_id == self._tenant_id, t.c.model_id == model_id)
        return newest_first(self._conn, query, t.c.created_at, t.c.id, limit, cursor, _study)

    def _where(self, study_id: str, *statuses: str) -> Any:
        return sa.and_(t.c.tenant_id == self._tenant_id, t.c.id == study_id, t.c.status.in_(statuses))

    def start(self, study_id: str, at: datetime) -> bool:
        done = self._conn.execute(
            t.update()
            .where(self._where(study_id, "queued"))
            .values(status="running", started_at=at, updated_at=at)
        )
        return bool(done.rowcount)

    def add_trial(self, study_id: str, trial: dict[str, Any], at: datetime) -> bool:
        row = self._conn.execute(
            sa.select(t.c.trials).where(self._where(study_id, "running")).with_for_update()
        ).first()
        if row is None:
            return False
        trials = [*(row.trials or []), trial]
        done = self._conn.execute(
            t.update().where(self._where(study_id, "running")).values(trials=trials, updated_at=at)
        )
        return bool(done.rowcount)

    def touch(self, study_id: str, at: datetime) -> bool:
        """The runner's heartbeat: False once the study has ended (cancelled, or recovered as silent)."""
        done = self._conn.execute(t.update().where(self._where(study_id, *_RUNNING)).values(updated_at=at))
        return bool(done.rowcount)

    def finish(
        self,
        study_id: str,
        status: str,
        at: datetime,
        result: dict[str, Any] | None = None,
        error: str | None = None,
        version: int | None = None,
    ) -> bool:
        done = self._conn.execute(
            t.update()
            .where(self._where(study_id, *_RUNNING))
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


def _study(row: sa.RowMapping) -> Study:
    return Study(
        id=row["id"],
        tenant_id=row["tenant_id"],
        model_id=row["model_id"],
        status=row["status"],
        request=row["request"],
        trials=list(row["trials"] or []),
        created_at=row["created_at"],
        updated_at=row["updated_at"],
        result=row["result"],
        error=row["error"],
        version=row["version"],
        created_by=row["created_by"],
        started_at=row["started_at"],
        finished_at=row["finished_at"],
    )


class SqlAlchemySilentStudies:
    """Across tenants: the studies whose runner has not been heard of since a time (a killed service)."""

    def __init__(self, engine: Engine) -> None:
        self._engine = engine

    def __call__(self, before: datetime) -> list[tuple[str, str]]:
        with self._engine.connect() as conn:
            rows = conn.execute(
                sa.select(t.c.tenant_id, t.c.id).where(t.c.status.in_(_RUNNING), t.c.updated_at < before)
            ).all()
        return [(row.tenant_id, row.id) for row in rows]
