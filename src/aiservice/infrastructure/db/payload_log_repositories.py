"""Payload logs in SQL: the tenant-scoped repository (in the unit of work) and the recorder's
cross-tenant store (batched writes, enabled policies, the retention purge).

With a model's ``parquet`` sink, a written row keeps everything but its inputs and outputs (NULL here),
which go, for each (tenant, model) of a batch, into one Parquet file in the artifact store; the row
names it (``file_key``, ``file_row``) and ``payload_log_files`` indexes the files. Reading fills such
rows in from their files, each file read once per call; a file that is missing or fails its digest
gives its rows null inputs and outputs and ``payload_unavailable``, not an error. A file is deleted
when none of its rows remain, after the transaction that deleted the last of them commits; until its
object is gone its row stays, so a failed delete is tried again by the next purge."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from datetime import datetime, timedelta
from itertools import groupby
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from aiservice.application.payload_logging.ports import PredictionQuery
from aiservice.domain.clock import utcnow
from aiservice.domain.pagination import Page
from aiservice.domain.payload_logging import Feedback, LoggedPrediction, LoggingPolicy
from aiservice.infrastructure.db.engine import writer_engine
from aiservice.infrastructure.db.keyset import newest_first
from aiservice.infrastructure.db.tables import (
    models,
    payload_log_files,
    payload_log_policies,
    prediction_feedback,
    prediction_logs,
)
from aiservice.infrastructure.payload_logs.parquet_files import ParquetPayloadFiles

_LOGS = prediction_logs.c
_FEEDBACK = prediction_feedback.c
_JOINED = prediction_logs.outerjoin(
    prediction_feedback,
    sa.and_(_FEEDBACK.tenant_id == _LOGS.tenant_id, _FEEDBACK.request_id == _LOGS.request_id),
)
_COLUMNS = (
    *prediction_logs.c,
    _FEEDBACK.label.label("fb_label"),
    _FEEDBACK.has_label.label("fb_has_label"),
    _FEEDBACK.reward.label("fb_reward"),
    _FEEDBACK.created_by.label("fb_created_by"),
    _FEEDBACK.created_at.label("fb_created_at"),
)
_CHUNK = 500  # ids per IN (...) list
_FILES = payload_log_files.c
PARQUET = "parquet"

_FileRefs = dict[str, tuple[str, int]]  # row id -> (file key, row in the file)


class SqlAlchemyPayloadLogRepository:
    def __init__(self, conn: Connection, tenant_id: str, files: ParquetPayloadFiles | None = None) -> None:
        self._conn = conn
        self._tenant = tenant_id
        self._files = files  # the Parquet sink's files (None: rows that name one come back unavailable)

    def policy(self, model_id: str) -> LoggingPolicy | None:
        row = (
            self._conn.execute(
                sa.select(payload_log_policies).where(
                    payload_log_policies.c.tenant_id == self._tenant,
                    payload_log_policies.c.model_id == model_id,
                )
            )
            .mappings()
            .first()
        )
        return None if row is None else _policy(row)

    def set_policy(self, model_id: str, policy: LoggingPolicy, now: datetime, by: str) -> None:
        where = (
            payload_log_policies.c.tenant_id == self._tenant,
            payload_log_policies.c.model_id == model_id,
        )
        values = {
            "enabled": policy.enabled,
            "sample_rate": policy.sample_rate,
            "retention_days": policy.retention_days,
            "sink": policy.sink,
            "updated_by": by,
            "updated_at": now,
        }
        if self._conn.execute(payload_log_policies.update().where(*where).values(**values)).rowcount == 0:
            self._conn.execute(
                payload_log_policies.insert().values(tenant_id=self._tenant, model_id=model_id, **values)
            )

    def page(self, model_id: str, query: PredictionQuery) -> Page[LoggedPrediction]:
        stmt = (
            sa.select(*_COLUMNS)
            .select_from(_JOINED)
            .where(_LOGS.tenant_id == self._tenant, _LOGS.model_id == model_id)
        )
        stmt = _in_window(stmt, query.version, query.since, query.until)
        refs: _FileRefs = {}
        page = newest_first(
            self._conn, stmt, _LOGS.created_at, _LOGS.id, query.limit, query.cursor, _noting(refs)
        )
        return dataclasses.replace(page, items=self._hydrated(page.items, refs))

    def latest(self, request_ids: Sequence[str], *, payloads: bool = True) -> dict[str, LoggedPrediction]:
        found: dict[str, LoggedPrediction] = {}
        refs: _FileRefs = {}
        noting = _noting(refs)
        ids = list(dict.fromkeys(request_ids))
        for start in range(0, len(ids), _CHUNK):
            stmt = (
                sa.select(*_COLUMNS)
                .select_from(_JOINED)
                .where(_LOGS.tenant_id == self._tenant, _LOGS.request_id.in_(ids[start : start + _CHUNK]))
                .order_by(_LOGS.created_at, _LOGS.id)  # the latest of a reused id is kept
            )
            for row in self._conn.execute(stmt).mappings():
                found[row["request_id"]] = noting(row)
        if not payloads:
            return found
        hydrated = self._hydrated(list(found.values()), refs)
        return {logged.request_id: logged for logged in hydrated}

    def put_feedback(self, feedback: Feedback) -> None:
        self._conn.execute(
            prediction_feedback.delete().where(
                _FEEDBACK.tenant_id == self._tenant, _FEEDBACK.request_id == feedback.request_id
            )
        )
        self._conn.execute(
            prediction_feedback.insert().values(
                tenant_id=self._tenant,
                request_id=feedback.request_id,
                model_id=feedback.model_id,
                label=feedback.label if feedback.has_label else None,
                has_label=feedback.has_label,
                reward=feedback.reward,
                created_by=feedback.created_by,
                created_at=feedback.created_at,
            )
        )

    def erase_model(self, model_id: str, *, policy: bool = False) -> dict[str, int]:
        counts = {
            "predictions": self._conn.execute(
                prediction_logs.delete().where(_LOGS.tenant_id == self._tenant, _LOGS.model_id == model_id)
            ).rowcount,
            "feedback": self._conn.execute(
                prediction_feedback.delete().where(
                    _FEEDBACK.tenant_id == self._tenant, _FEEDBACK.model_id == model_id
                )
            ).rowcount,
        }
        if policy:
            self._conn.execute(
                payload_log_policies.delete().where(
                    payload_log_policies.c.tenant_id == self._tenant,
                    payload_log_policies.c.model_id == model_id,
                )
            )
        return counts

    def window(
        self, model_id: str, version: int | None, since: datetime | None, until: datetime | None, limit: int
    ) -> list[LoggedPrediction]:
        stmt = (
            sa.select(*_COLUMNS)
            .select_from(_JOINED)
            .where(_LOGS.tenant_id == self._tenant, _LOGS.model_id == model_id)
        )
        stmt = _in_window(stmt, version, since, until).order_by(_LOGS.created_at, _LOGS.id).limit(limit)
        refs: _FileRefs = {}
        noting = _noting(refs)
        return self._hydrated([noting(row) for row in self._conn.execute(stmt).mappings()], refs)

    def _hydrated(self, logged: list[LoggedPrediction], refs: _FileRefs) -> list[LoggedPrediction]:
        """``logged`` with the inputs and outputs of the rows in ``refs`` read from their files."""
        if not refs:
            return logged
        keys = sorted({key for key, _ in refs.values()})
        digests: dict[str, str] = {}
        for start in range(0, len(keys), _CHUNK):
            stmt = sa.select(_FILES.key, _FILES.digest).where(
                _FILES.tenant_id == self._tenant, _FILES.key.in_(keys[start : start + _CHUNK])
            )
            digests.update((key, digest) for key, digest in self._conn.execute(stmt).all())
        contents = {
            key: self._files.read(key, digests[key]) if self._files is not None and key in digests else None
            for key in keys
        }
        result = []
        for item in logged:
            ref = refs.get(item.id)
            if ref is None:
                result.append(item)
                continue
            rows = contents[ref[0]]
            row = rows[ref[1]] if rows is not None and 0 <= ref[1] < len(rows) else None
            if row is None or row.id != item.id:
                result.append(dataclasses.replace(item, payload_unavailable=True))
            else:
                result.append(dataclasses.replace(item, inputs=row.inputs, outputs=row.outputs))
        return result


class SqlAlchemyPayloadLogStore:
    """Every tenant's logs: written in batches by the recorder, purged by retention."""

    def __init__(self, engine: Engine, files: ParquetPayloadFiles | None = None) -> None:
        self._reader = engine
        self._writer = writer_engine(engine)
        self._files = files

    def write(self, records: Sequence[LoggedPrediction]) -> None:
        """One transaction; the inputs and outputs of a model with the Parquet sink go first to one file
        per (tenant, model), deleted again if the transaction fails."""
        if not records:
            return
        parquet = self._parquet_models({r.tenant_id for r in records}) if self._files else set()
        rows: list[dict[str, Any]] = []
        files: list[dict[str, Any]] = []
        try:
            for (tenant_id, model_id), group in groupby(sorted(records, key=_by_model), key=_by_model):
                batch = list(group)
                if (tenant_id, model_id) not in parquet or self._files is None:
                    rows.extend(_row(r) for r in batch)
                    continue
                stored = self._files.write(tenant_id, model_id, batch)
                files.append(
                    {
                        "tenant_id": tenant_id,
                        "key": stored.key,
                        "model_id": model_id,
                        "digest": stored.digest,
                        "rows": len(batch),
                        "min_logged_at": min(r.created_at for r in batch),
                        "max_logged_at": max(r.created_at for r in batch),
                        "created_at": utcnow(),
                    }
                )
                rows.extend(
                    {**_row(r), "inputs": None, "outputs": None, "file_key": stored.key, "file_row": i}
                    for i, r in enumerate(batch)
                )
            with self._writer.begin() as conn:
                if files:
                    conn.execute(payload_log_files.insert(), files)
                conn.execute(prediction_logs.insert(), rows)
        except BaseException:
            for file in files:
                if self._files is not None:
                    self._files.delete(file["key"])
            raise

    def _parquet_models(self, tenants: set[str]) -> set[tuple[str, str]]:
        p = payload_log_policies.c
        stmt = sa.select(p.tenant_id, p.model_id).where(p.sink == PARQUET, p.tenant_id.in_(sorted(tenants)))
        with self._reader.connect() as conn:
            return {(tenant_id, model_id) for tenant_id, model_id in conn.execute(stmt).all()}

    def drop_files(self, tenant_id: str | None = None, model_id: str | None = None) -> int:
        """Deletes the Parquet files none of whose rows remain (of one tenant's model, or all of them),
        each file's row once its object is gone; the files deleted. A failed delete keeps the row."""
        unreferenced = ~sa.exists().where(_LOGS.tenant_id == _FILES.tenant_id, _LOGS.file_key == _FILES.key)
        stmt = sa.select(_FILES.tenant_id, _FILES.key).where(unreferenced)
        if tenant_id is not None:
            stmt = stmt.where(_FILES.tenant_id == tenant_id)
        if model_id is not None:
            stmt = stmt.where(_FILES.model_id == model_id)
        with self._reader.connect() as conn:
            found = conn.execute(stmt).all()
        dropped = 0
        for tenant, key in found:
            if self._files is not None and not self._files.delete(key):
                continue
            with self._writer.begin() as conn:
                conn.execute(payload_log_files.delete().where(_FILES.tenant_id == tenant, _FILES.key == key))
            dropped += 1
        return dropped

    def enabled_policies(self) -> dict[tuple[str, str], LoggingPolicy]:
        p = payload_log_policies.c
        stmt = (
            sa.select(payload_log_policies)
            .join(models, sa.and_(models.c.tenant_id == p.tenant_id, models.c.id == p.model_id))
            .where(p.enabled.is_(True), models.c.deleted_at.is_(None))
        )
        with self._reader.connect() as conn:
            return {(r["tenant_id"], r["model_id"]): _policy(r) for r in conn.execute(stmt).mappings()}

    def purge(self, now: datetime) -> int:
        """Per policy, the logs older than its retention; then every log of a model that is deleted (or
        gone) or has no policy, the feedback no log is left for, and the policies of deleted models."""
        p = payload_log_policies.c
        deleted = 0
        live_model = sa.exists().where(
            models.c.tenant_id == _LOGS.tenant_id,
            models.c.id == _LOGS.model_id,
            models.c.deleted_at.is_(None),
        )
        has_policy = sa.exists().where(p.tenant_id == _LOGS.tenant_id, p.model_id == _LOGS.model_id)
        logged = sa.exists().where(
            _LOGS.tenant_id == _FEEDBACK.tenant_id, _LOGS.request_id == _FEEDBACK.request_id
        )
        policy_model = sa.exists().where(
            models.c.tenant_id == p.tenant_id, models.c.id == p.model_id, models.c.deleted_at.is_(None)
        )
        with self._writer.begin() as conn:
            policies = conn.execute(sa.select(p.tenant_id, p.model_id, p.retention_days)).all()
            for tenant_id, model_id, days in policies:
                old = prediction_logs.delete().where(
                    _LOGS.tenant_id == tenant_id,
                    _LOGS.model_id == model_id,
                    _LOGS.created_at < now - timedelta(days=days),
                )
                deleted += conn.execute(old).rowcount
            deleted += conn.execute(prediction_logs.delete().where(~live_model | ~has_policy)).rowcount
            conn.execute(prediction_feedback.delete().where(~logged))
            conn.execute(payload_log_policies.delete().where(~policy_model))
        self.drop_files()  # after the commit: the files none of whose rows remain
        return deleted


def _in_window(
    stmt: sa.Select[Any], version: int | None, since: datetime | None, until: datetime | None
) -> sa.Select[Any]:
    if version is not None:
        stmt = stmt.where(_LOGS.version == version)
    if since is not None:
        stmt = stmt.where(_LOGS.created_at >= since)
    if until is not None:
        stmt = stmt.where(_LOGS.created_at < until)
    return stmt


def _policy(row: sa.RowMapping) -> LoggingPolicy:
    return LoggingPolicy(
        enabled=bool(row["enabled"]),
        sample_rate=float(row["sample_rate"]),
        retention_days=row["retention_days"],
        sink=row["sink"],
    )


def _row(r: LoggedPrediction) -> dict[str, Any]:
    return {
        "tenant_id": r.tenant_id,
        "id": r.id,
        "request_id": r.request_id,
        "model_id": r.model_id,
        "version": r.version,
        "deployment": r.deployment,
        "experiment_id": r.experiment_id,
        "arm": r.arm,
        "inputs": r.inputs,
        "outputs": r.outputs,
        "latency_ms": r.latency_ms,
        "created_at": r.created_at,
        "file_key": None,
        "file_row": None,
    }


def _by_model(r: LoggedPrediction) -> tuple[str, str]:
    return (r.tenant_id, r.model_id)


def _noting(refs: _FileRefs) -> Callable[[sa.RowMapping], LoggedPrediction]:
    """``_logged``, noting in ``refs`` the file of each row whose inputs and outputs are in one."""

    def logged(row: sa.RowMapping) -> LoggedPrediction:
        if row["file_key"] is not None:
            refs[row["id"]] = (row["file_key"], row["file_row"])
        return _logged(row)

    return logged


def _logged(row: sa.RowMapping) -> LoggedPrediction:
    feedback = None
    if row["fb_created_at"] is not None:
        feedback = Feedback(
            request_id=row["request_id"],
            model_id=row["model_id"],
            label=row["fb_label"],
            has_label=bool(row["fb_has_label"]),
            reward=row["fb_reward"],
            created_at=row["fb_created_at"],
            created_by=row["fb_created_by"],
        )
    return LoggedPrediction(
        id=row["id"],
        request_id=row["request_id"],
        tenant_id=row["tenant_id"],
        model_id=row["model_id"],
        version=row["version"],
        inputs=row["inputs"],
        outputs=row["outputs"],
        latency_ms=row["latency_ms"],
        created_at=row["created_at"],
        deployment=row["deployment"],
        experiment_id=row["experiment_id"],
        arm=row["arm"],
        feedback=feedback,
    )
