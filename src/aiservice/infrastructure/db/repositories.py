"""SQLAlchemy repositories. Each is built for one tenant and adds ``tenant_id`` to every statement."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from aiservice.application.ports import ModelQuery
from aiservice.domain.errors import Conflict, FieldError, InvalidInput
from aiservice.domain.models import Alias, ArtifactRef, Framework, Model, ModelVersion, ServingRecord, Stage
from aiservice.domain.pagination import Page, decode_cursor, encode_cursor
from aiservice.domain.signature import Signature
from aiservice.infrastructure.db.tables import model_aliases, model_versions, models
from aiservice.infrastructure.db.tenant_erasure import version_keys

_SORT_COLUMNS = {"createdAt": models.c.created_at, "updatedAt": models.c.updated_at, "name": models.c.name}


def _is_unique_violation(exc: sa.exc.IntegrityError) -> bool:
    text = str(exc.orig).lower()
    return "unique" in text or "duplicate key" in text


class SqlAlchemyModelRepository:
    def __init__(self, conn: Connection, tenant_id: str) -> None:
        self._conn = conn
        self._tenant = tenant_id
        self.seen: list[Model] = []

    def _live(self) -> sa.ColumnElement[bool]:
        return sa.and_(models.c.tenant_id == self._tenant, models.c.deleted_at.is_(None))

    def add(self, model: Model) -> None:
        try:
            self._conn.execute(models.insert().values(**_model_row(model)))
        except sa.exc.IntegrityError as exc:
            if _is_unique_violation(exc):
                raise Conflict(f"A model named {model.name!r} already exists in this tenant.") from exc
            raise
        self.seen.append(model)

    def save(self, model: Model) -> None:
        row = _model_row(model)
        del row["id"], row["tenant_id"]
        self._conn.execute(
            models.update().where(models.c.tenant_id == self._tenant, models.c.id == model.id).values(**row)
        )
        self.seen.append(model)

    def get(self, model_id: str) -> Model | None:
        row = (
            self._conn.execute(sa.select(models).where(self._live(), models.c.id == model_id))
            .mappings()
            .first()
        )
        return _model(row) if row else None

    def get_by_name(self, name: str) -> Model | None:
        row = (
            self._conn.execute(sa.select(models).where(self._live(), models.c.name == name))
            .mappings()
            .first()
        )
        return _model(row) if row else None

    def search(self, query: ModelQuery) -> Page[Model]:
        descending = query.sort.startswith("-")
        sort_name = query.sort.lstrip("-")
        column = _SORT_COLUMNS[sort_name]
        stmt = sa.select(models).where(self._live())
        if query.framework is not None:
            stmt = stmt.where(models.c.framework == query.framework.value)
        if query.category is not None:
            stmt = stmt.where(models.c.category == query.category)
        if query.tag is not None:
            stmt = stmt.where(self._has_tag(query.tag))
        if query.text:
            needle = query.text.lower()
            stmt = stmt.where(
                sa.or_(
                    sa.func.lower(models.c.name).contains(needle, autoescape=True),
                    sa.func.lower(models.c.description).contains(needle, autoescape=True),
                )
            )
        if query.cursor:
            stmt = stmt.where(_after(column, models.c.id, query.cursor, query.sort, descending))
        order = (column.desc(), models.c.id.desc()) if descending else (column.asc(), models.c.id.asc())
        rows = self._conn.execute(stmt.order_by(*order).limit(query.limit + 1)).mappings().all()
        items = [_model(r) for r in rows[: query.limit]]
        next_cursor = None
        if len(rows) > query.limit:
            last = items[-1]
            value = getattr(
                last, {"createdAt": "created_at", "updatedAt": "updated_at"}.get(sort_name, "name")
            )
            next_cursor = encode_cursor(
                {
                    "s": query.sort,
                    "k": value.isoformat() if isinstance(value, datetime) else value,
                    "id": last.id,
                }
            )
        return Page(items=items, next_cursor=next_cursor)

    def _has_tag(self, tag: str) -> sa.ColumnElement[bool]:
        if self._conn.dialect.name == "postgresql":
            return models.c.tags.op("@>")(sa.func.jsonb_build_array(tag))
        each = sa.func.json_each(models.c.tags).table_valued("value")
        return sa.exists(sa.select(sa.literal(1)).select_from(each).where(each.c.value == tag))

    def deleted_before(self, cutoff: datetime) -> list[Model]:
        rows = self._conn.execute(
            sa.select(models).where(
                models.c.tenant_id == self._tenant,
                models.c.deleted_at.is_not(None),
                models.c.deleted_at < cutoff,
            )
        ).mappings()
        return [_model(r) for r in rows]

    def erase(self, model_id: str) -> list[str]:
        keys = version_keys(  # each version's artifact and its compiled form
            self._conn.execute(
                sa.select(model_versions.c.artifact_key, model_versions.c.serving).where(
                    model_versions.c.tenant_id == self._tenant, model_versions.c.model_id == model_id
                )
            )
        )
        for table in (model_aliases, model_versions):
            self._conn.execute(
                table.delete().where(table.c.tenant_id == self._tenant, table.c.model_id == model_id)
            )
        self._conn.execute(models.delete().where(models.c.tenant_id == self._tenant, models.c.id == model_id))
        return keys

    def next_version_number(self, model_id: str) -> int:
        number = self._conn.execute(
            models.update()
            .where(models.c.tenant_id == self._tenant, models.c.id == model_id)
            .values(latest_version=sa.func.coalesce(models.c.latest_version, 0) + 1)
            .returning(models.c.latest_version)
        ).scalar_one()
        return int(number)


def _after(
    column: sa.ColumnElement[Any], id_column: sa.ColumnElement[str], cursor: str, sort: str, descending: bool
) -> sa.ColumnElement[bool]:
    position = decode_cursor(cursor)
    if position.get("s") != sort or "k" not in position or not isinstance(position.get("id"), str):
        raise InvalidInput(
            "The cursor belongs to a different sort order; start again without it.",
            errors=[FieldError("query.cursor", "cursor does not match the sort")],
        )
    key: Any = position["k"]
    if column.key in ("created_at", "updated_at"):
        try:
            key = datetime.fromisoformat(key)
        except (TypeError, ValueError) as exc:
            raise InvalidInput(
                "The cursor is malformed.", errors=[FieldError("query.cursor", "bad key")]
            ) from exc
    if descending:
        return sa.or_(column < key, sa.and_(column == key, id_column < position["id"]))
    return sa.or_(column > key, sa.and_(column == key, id_column > position["id"]))


def _model_row(model: Model) -> dict[str, Any]:
    return {
        "id": model.id,
        "tenant_id": model.tenant_id,
        "name": model.name,
        "description": model.description,
        "framework": model.framework.value,
        "category": model.category,
        "configuration": model.configuration,
        "input_schema": model.input_schema,
        "output_schema": model.output_schema,
        "tags": model.tags,
        "latest_version": model.latest_version,
        "created_by": model.created_by,
        "created_at": model.created_at,
        "updated_at": model.updated_at,
        "deleted_at": model.deleted_at,
    }


def _model(row: sa.RowMapping) -> Model:
    return Model(
        id=row["id"],
        tenant_id=row["tenant_id"],
        name=row["name"],
        description=row["description"],
        framework=Framework(row["framework"]),
        category=row["category"],
        configuration=row["configuration"],
        input_schema=row["input_schema"],
        output_schema=row["output_schema"],
        tags=row["tags"],
        latest_version=row["latest_version"],
        created_by=row["created_by"],
        created_at=row["created_at"],
        updated_at=row["updated_at"],
        deleted_at=row["deleted_at"],
    )


class SqlAlchemyVersionRepository:
    def __init__(self, conn: Connection, tenant_id: str) -> None:
        self._conn = conn
        self._tenant = tenant_id

    def _scoped(self, model_id: str) -> sa.Select[Any]:
        return sa.select(model_versions).where(
            model_versions.c.tenant_id == self._tenant, model_versions.c.model_id == model_id
        )

    def add(self, version: ModelVersion) -> None:
        a = version.artifact
        self._conn.execute(
            model_versions.insert().values(
                id=version.id,
                tenant_id=version.tenant_id,
                model_id=version.model_id,
                version=version.version,
                description=version.description,
                artifact_key=a.key,
                artifact_digest=a.digest,
                artifact_size=a.size_bytes,
                artifact_filename=a.filename,
                artifact_media_type=a.media_type,
                metrics=version.metrics,
                params=version.params,
                source_run=version.source_run,
                stage=version.stage.value,
                stage_changed_at=version.stage_changed_at,
                created_by=version.created_by,
                created_at=version.created_at,
                signature=version.signature.to_json() if version.signature else None,
                serving=version.serving.to_json(),
                lineage=version.lineage,
                configuration=version.configuration,
            )
        )

    def get(self, model_id: str, number: int) -> ModelVersion | None:
        row = (
            self._conn.execute(self._scoped(model_id).where(model_versions.c.version == number))
            .mappings()
            .first()
        )
        return _version(row) if row else None

    def page(self, model_id: str, limit: int, cursor: str | None) -> Page[ModelVersion]:
        stmt = self._scoped(model_id)
        if cursor:
            before = decode_cursor(cursor).get("v")
            if not isinstance(before, int):
                raise InvalidInput("The cursor is malformed.", errors=[FieldError("query.cursor", "bad key")])
            stmt = stmt.where(model_versions.c.version < before)
        rows = (
            self._conn.execute(stmt.order_by(model_versions.c.version.desc()).limit(limit + 1))
            .mappings()
            .all()
        )
        items = [_version(r) for r in rows[:limit]]
        next_cursor = encode_cursor({"v": items[-1].version}) if len(rows) > limit else None
        return Page(items=items, next_cursor=next_cursor)

    def in_stage(self, model_id: str, stage: Stage) -> list[ModelVersion]:
        rows = self._conn.execute(
            self._scoped(model_id)
            .where(model_versions.c.stage == stage.value)
            .order_by(model_versions.c.version.desc())
        ).mappings()
        return [_version(r) for r in rows]

    def set_serving(self, version: ModelVersion) -> None:
        self._conn.execute(
            model_versions.update()
            .where(model_versions.c.tenant_id == self._tenant, model_versions.c.id == version.id)
            .values(serving=version.serving.to_json())
        )

    def set_stage(self, version: ModelVersion) -> None:
        try:
            self._conn.execute(
                model_versions.update()
                .where(model_versions.c.tenant_id == self._tenant, model_versions.c.id == version.id)
                .values(stage=version.stage.value, stage_changed_at=version.stage_changed_at)
            )
        except sa.exc.IntegrityError as exc:
            if _is_unique_violation(exc):
                raise Conflict(
                    "Another version of this model was promoted to production at the same time."
                ) from exc
            raise


def _version(row: sa.RowMapping) -> ModelVersion:
    return ModelVersion(
        id=row["id"],
        tenant_id=row["tenant_id"],
        model_id=row["model_id"],
        version=row["version"],
        artifact=ArtifactRef(
            key=row["artifact_key"],
            digest=row["artifact_digest"],
            size_bytes=row["artifact_size"],
            filename=row["artifact_filename"],
            media_type=row["artifact_media_type"],
        ),
        created_at=row["created_at"],
        description=row["description"],
        metrics=row["metrics"],
        params=row["params"],
        source_run=row["source_run"],
        stage=Stage(row["stage"]),
        stage_changed_at=row["stage_changed_at"],
        created_by=row["created_by"],
        signature=Signature.from_json(row["signature"]) if row["signature"] else None,
        serving=ServingRecord.from_json(row["serving"] or {}),
        lineage=row["lineage"] or {},
        configuration=row["configuration"] or {},
    )


class SqlAlchemyAliasRepository:
    def __init__(self, conn: Connection, tenant_id: str) -> None:
        self._conn = conn
        self._tenant = tenant_id

    def _key(self, model_id: str, name: str) -> sa.ColumnElement[bool]:
        return sa.and_(
            model_aliases.c.tenant_id == self._tenant,
            model_aliases.c.model_id == model_id,
            model_aliases.c.alias == name,
        )

    def get(self, model_id: str, name: str) -> Alias | None:
        row = self._conn.execute(sa.select(model_aliases).where(self._key(model_id, name))).mappings().first()
        return _alias(row) if row else None

    def set(self, alias: Alias) -> None:
        self.delete(alias.model_id, alias.name)
        self._conn.execute(
            model_aliases.insert().values(
                tenant_id=self._tenant,
                model_id=alias.model_id,
                alias=alias.name,
                version=alias.version,
                updated_at=alias.updated_at,
            )
        )

    def delete(self, model_id: str, name: str) -> None:
        self._conn.execute(model_aliases.delete().where(self._key(model_id, name)))

    def for_model(self, model_id: str) -> list[Alias]:
        rows = self._conn.execute(
            sa.select(model_aliases)
            .where(model_aliases.c.tenant_id == self._tenant, model_aliases.c.model_id == model_id)
            .order_by(model_aliases.c.alias)
        ).mappings()
        return [_alias(r) for r in rows]


def _alias(row: sa.RowMapping) -> Alias:
    return Alias(
        model_id=row["model_id"], name=row["alias"], version=row["version"], updated_at=row["updated_at"]
    )
