"""Version use cases: streamed uploads, downloads, stages, aliases and the one reference resolver."""

from __future__ import annotations

import posixpath
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import BinaryIO

from aiservice.application.artifact_keys import InFlightKeys, new_artifact_key
from aiservice.application.ports import (
    ArtifactInspector,
    ArtifactStore,
    Clock,
    LoadSpec,
    StoredArtifact,
    UnitOfWork,
    UnitOfWorkFactory,
    chunks,
)
from aiservice.application.quotas import admit_version
from aiservice.application.registry import find_model
from aiservice.application.upload_deadline import UploadDeadline
from aiservice.application.version_upload import VersionUpload
from aiservice.domain.errors import Conflict, FieldError, InvalidArtifact, NotFound
from aiservice.domain.events import ModelAliasDeleted, ModelAliasSet, ModelStageChanged, ModelVersionCreated
from aiservice.domain.media_types import artifact_media_type
from aiservice.domain.models import (
    Alias,
    ArtifactRef,
    JsonObject,
    Model,
    ModelVersion,
    ServingRecord,
    Stage,
    check_alias_name,
    runtime_configuration,
)
from aiservice.domain.pagination import Page
from aiservice.domain.references import ModelReference
from aiservice.domain.schemas import parse_input_schema, parse_output_schema, signature_mismatches
from aiservice.domain.signature import Signature
from aiservice.domain.tenancy import Permission, Principal


@dataclass(frozen=True)
class VersionMetadata:
    description: str = ""
    metrics: JsonObject = field(default_factory=dict)
    params: JsonObject = field(default_factory=dict)
    source_run: str | None = None
    lineage: JsonObject = field(default_factory=dict)
    configuration: JsonObject = field(default_factory=dict)  # see ModelVersion.configuration


@dataclass
class PurgeReport:
    models: int = 0
    artifacts: int = 0


STAGE_NAMES = frozenset(s.value for s in Stage)


class ModelVersions:
    def __init__(
        self,
        uow: UnitOfWorkFactory,
        store: ArtifactStore,
        clock: Clock,
        max_artifact_bytes: int,
        inspector: ArtifactInspector,
        *,
        in_flight: InFlightKeys | None = None,
        upload_timeout_s: float = float("inf"),
    ) -> None:
        self._uow = uow
        self._store = store
        self._inspector = inspector
        self._clock = clock
        self.max_artifact_bytes = max_artifact_bytes
        self.in_flight = in_flight or InFlightKeys()
        self._upload_timeout_s = upload_timeout_s

    # -- uploads -------------------------------------------------------------------------------

    def start_upload(self, principal: Principal, model_ident: str) -> VersionUpload:
        """Check the caller may upload to this model, then open a writer for the bytes.

        Checked before any byte is read, so a forbidden or misaddressed upload fails at once.
        """
        principal.require(Permission.VERSION_WRITE)
        with self._uow(principal.tenant_id, writes=False) as uow:
            model = find_model(uow, model_ident, principal)
            admit_version(uow, model, 1, lock=False)  # an over-quota upload fails before its bytes
        key = new_artifact_key(principal.tenant_id, model.id)
        deadline = UploadDeadline(self._upload_timeout_s)
        self.in_flight.hold(key)
        try:
            writer = self._store.writer(key, self.max_artifact_bytes)
        except BaseException:
            self.in_flight.release(key)
            raise
        return VersionUpload(principal, model.id, key, writer, deadline, self.in_flight)

    def upload_file(
        self,
        principal: Principal,
        model_ident: str,
        artifact: Path,
        filename: str,
        metadata: VersionMetadata,
        on_commit: Callable[[UnitOfWork, ModelVersion], None] | None = None,
    ) -> ModelVersion:
        """Registers a file the service made itself (a trained, searched or optimised model) exactly as
        an upload: the same quota, checksum, isolated inspection and event."""
        upload = self.start_upload(principal, model_ident)
        try:
            with artifact.open("rb") as handle:
                for chunk in chunks(handle):
                    upload.write(chunk)
        except BaseException:
            upload.abort()
            raise
        return self.finish_upload(upload, filename, metadata, on_commit=on_commit)

    def finish_upload(
        self,
        upload: VersionUpload,
        filename: str,
        metadata: VersionMetadata,
        on_commit: Callable[[UnitOfWork, ModelVersion], None] | None = None,
    ) -> ModelVersion:
        """Seal the bytes, inspect them in isolation, and record version N+1 with their signature.

        The artifact's media type comes from ``filename`` through our own map, never from the client.

        On any failure (a broken, untrusted or mislabelled artifact included) the bytes are removed.
        ``on_commit`` runs inside the version's transaction (a training job ends there); if it raises,
        nothing is recorded.
        """
        try:
            upload.check_deadline()
            stored = upload.writer.commit()
        except BaseException:
            upload.done()
            raise
        try:
            signature = self._inspect(upload, stored, safe_filename(filename), metadata.configuration)
            with self._uow(upload.principal.tenant_id) as uow:
                model = uow.models.get(upload.model_id)
                if model is None:  # deleted while the bytes were streaming
                    raise NotFound(f"Model {upload.model_id!r} was deleted during the upload.")
                admit_version(uow, model, stored.size_bytes)  # locks the tenant's row until commit
                version = ModelVersion(
                    tenant_id=model.tenant_id,
                    model_id=model.id,
                    version=uow.models.next_version_number(model.id),
                    artifact=ArtifactRef(
                        key=stored.key,
                        digest=stored.digest,
                        size_bytes=stored.size_bytes,
                        filename=safe_filename(filename),
                        media_type=artifact_media_type(safe_filename(filename)),
                    ),
                    created_at=self._clock(),
                    description=metadata.description,
                    metrics=metadata.metrics,
                    params=metadata.params,
                    source_run=metadata.source_run,
                    lineage=metadata.lineage,
                    configuration=metadata.configuration,
                    created_by=upload.principal.subject,
                    signature=signature,
                    serving=ServingRecord(reason="the framework's own runtime"),
                )
                uow.versions.add(version)
                if on_commit is not None:
                    on_commit(uow, version)
                uow.record(
                    ModelVersionCreated(
                        tenant_id=model.tenant_id,
                        aggregate_id=model.id,
                        version=version.version,
                        digest=stored.digest,
                        size_bytes=stored.size_bytes,
                    )
                )
                uow.commit()
                return version
        except BaseException:
            self._store.delete(stored.key)
            raise
        finally:
            upload.done()

    def _inspect(
        self, upload: VersionUpload, stored: StoredArtifact, filename: str, configuration: JsonObject
    ) -> Signature:
        with self._uow(upload.principal.tenant_id, writes=False) as uow:
            model = uow.models.get(upload.model_id)
            tenant = uow.tenants.get(upload.principal.tenant_id)
        if model is None:
            raise NotFound(f"Model {upload.model_id!r} was deleted during the upload.")
        spec = LoadSpec(
            framework=model.framework,
            filename=filename,
            allow_pickle=tenant.allow_pickle if tenant else False,
            configuration=runtime_configuration(model, configuration),
        )
        path = self._store.local_path(stored.key, stored.digest, verify=False)
        signature = self._inspector.inspect(path, spec)
        problems = signature_mismatches(
            parse_input_schema(model.input_schema), parse_output_schema(model.output_schema), signature
        )
        if problems:
            raise InvalidArtifact(
                "The artifact does not match the model's declared schemas: "
                + "; ".join(f"{p.field}: {p.message}" for p in problems)
                + ".",
                errors=problems,
            )
        return signature

    def purge_deleted(self, older_than: timedelta) -> PurgeReport:
        """Erase models soft-deleted more than ``older_than`` ago, in every tenant, with their bytes.

        An operator's action (no principal): rows go first, in one transaction per model; the
        artifacts are removed only after that commit, so a failure never leaves a row without bytes.
        """
        cutoff = self._clock() - older_than
        report = PurgeReport()
        with self._uow("-", writes=False) as uow:  # tenants are platform-wide: any scope lists them
            tenant_ids = uow.tenants.all_ids()
        for tenant_id in tenant_ids:
            with self._uow(tenant_id, writes=False) as uow:
                doomed = [m.id for m in uow.models.deleted_before(cutoff)]
            for model_id in doomed:
                with self._uow(tenant_id) as uow:
                    keys = uow.models.erase(model_id)
                    uow.commit()
                for key in keys:
                    self._store.delete(key)
                report.models += 1
                report.artifacts += len(keys)
        return report

    # -- reads ---------------------------------------------------------------------------------

    def list_versions(
        self, principal: Principal, model_ident: str, limit: int, cursor: str | None
    ) -> Page[ModelVersion]:
        principal.require(Permission.MODEL_READ)
        with self._uow(principal.tenant_id, writes=False) as uow:
            model = find_model(uow, model_ident, principal)
            return uow.versions.page(model.id, limit, cursor)

    def get_version(self, principal: Principal, model_ident: str, number: int) -> ModelVersion:
        principal.require(Permission.MODEL_READ)
        with self._uow(principal.tenant_id, writes=False) as uow:
            return _version(uow, find_model(uow, model_ident, principal), number)

    def open_artifact(
        self, principal: Principal, model_ident: str, number: int
    ) -> tuple[ModelVersion, BinaryIO]:
        """The version and its verified bytes; ``ArtifactCorrupt`` if they no longer match."""
        version = self.get_version(principal, model_ident, number)
        return version, self._store.open(version.artifact.key, version.artifact.digest)

    def resolve(self, principal: Principal, reference: str) -> tuple[Model, ModelVersion]:
        """Turn ``name``, ``id``, ``name:3``, ``name@alias``, ``name@production`` or ``name@latest``
        into one version. A bare model means its production version, else its latest."""
        principal.require(Permission.MODEL_READ)
        return self._resolve(principal, reference)

    def _resolve(self, principal: Principal, reference: str) -> tuple[Model, ModelVersion]:
        ref = ModelReference.parse(reference, field_name="reference")
        with self._uow(principal.tenant_id, writes=False) as uow:
            model = find_model(uow, ref.model, principal)
            return model, resolve_in(uow, model, ref)

    def serving_target(self, principal: Principal, reference: str) -> tuple[Model, ModelVersion, bool]:
        """``resolve`` for a caller who may predict, plus whether the tenant accepts pickle."""
        principal.require(Permission.PREDICT)
        model, version = self._resolve(principal, reference)
        with self._uow(principal.tenant_id, writes=False) as uow:
            tenant = uow.tenants.get(principal.tenant_id)
        return model, version, bool(tenant and tenant.allow_pickle)

    # -- stages and aliases --------------------------------------------------------------------

    def set_stage(
        self, principal: Principal, model_ident: str, number: int, stage: Stage, archive_existing: bool
    ) -> ModelVersion:
        principal.require(Permission.STAGE_WRITE)
        if stage == Stage.PRODUCTION:
            principal.require(Permission.STAGE_PRODUCTION)
        with self._uow(principal.tenant_id) as uow:
            model = find_model(uow, model_ident, principal)
            version = _version(uow, model, number)
            if version.stage == stage:
                return version
            if version.stage == Stage.PRODUCTION:  # taking a version out of production is a deployer's call
                principal.require(Permission.STAGE_PRODUCTION)
            now = self._clock()
            if stage == Stage.PRODUCTION:
                current = [v for v in uow.versions.in_stage(model.id, stage) if v.version != number]
                if current and not archive_existing:
                    raise Conflict(
                        f"Version {current[0].version} of {model.name!r} is already in production; "
                        "send archiveExisting: true to archive it.",
                        extra={"productionVersion": current[0].version},
                    )
                for other in current:
                    self._move(uow, other, Stage.ARCHIVED, now)
            self._move(uow, version, stage, now)
            uow.commit()
            return version

    @staticmethod
    def _move(uow: UnitOfWork, version: ModelVersion, stage: Stage, now: datetime) -> None:
        previous = version.stage
        version.stage = stage
        version.stage_changed_at = now
        uow.versions.set_stage(version)
        uow.record(
            ModelStageChanged(
                tenant_id=version.tenant_id,
                aggregate_id=version.model_id,
                version=version.version,
                from_stage=previous.value,
                to_stage=stage.value,
            )
        )

    def set_alias(self, principal: Principal, model_ident: str, alias: str, number: int) -> Alias:
        principal.require(Permission.ALIAS_WRITE)
        check_alias_name(alias)
        with self._uow(principal.tenant_id) as uow:
            model = find_model(uow, model_ident, principal)
            _version(uow, model, number, field_name="body.version")
            previous = uow.aliases.get(model.id, alias)
            record = Alias(model_id=model.id, name=alias, version=number, updated_at=self._clock())
            uow.aliases.set(record)
            uow.record(
                ModelAliasSet(
                    tenant_id=model.tenant_id,
                    aggregate_id=model.id,
                    alias=alias,
                    version=number,
                    previous_version=previous.version if previous else None,
                )
            )
            uow.commit()
            return record

    def delete_alias(self, principal: Principal, model_ident: str, alias: str) -> None:
        principal.require(Permission.ALIAS_WRITE)
        with self._uow(principal.tenant_id) as uow:
            model = find_model(uow, model_ident, principal)
            existing = uow.aliases.get(model.id, alias)
            if existing is None:
                raise NotFound(f"Model {model.name!r} has no alias {alias!r}.", extra={"alias": alias})
            uow.aliases.delete(model.id, alias)
            uow.record(
                ModelAliasDeleted(
                    tenant_id=model.tenant_id, aggregate_id=model.id, alias=alias, version=existing.version
                )
            )
            uow.commit()

    def aliases(self, principal: Principal, model_ident: str) -> list[Alias]:
        principal.require(Permission.MODEL_READ)
        with self._uow(principal.tenant_id, writes=False) as uow:
            return uow.aliases.for_model(find_model(uow, model_ident, principal).id)


def _version(uow: UnitOfWork, model: Model, number: int, field_name: str = "path.version") -> ModelVersion:
    version = uow.versions.get(model.id, number)
    if version is None:
        raise NotFound(
            f"Model {model.name!r} has no version {number}.",
            errors=[FieldError(field_name, "no such version")],
        )
    return version


def resolve_in(uow: UnitOfWork, model: Model, ref: ModelReference) -> ModelVersion:
    if ref.version is not None:
        return _version(uow, model, ref.version, field_name="reference")
    if ref.alias is not None and ref.alias != "latest":
        if ref.alias in STAGE_NAMES:
            in_stage = uow.versions.in_stage(model.id, Stage(ref.alias))
            if not in_stage:
                raise NotFound(f"Model {model.name!r} has no version in stage {ref.alias!r}.")
            return max(in_stage, key=lambda v: v.version)
        alias = uow.aliases.get(model.id, ref.alias)
        if alias is None:
            raise NotFound(
                f"Model {model.name!r} has no alias {ref.alias!r}.",
                errors=[FieldError("reference", "unknown alias")],
            )
        return _version(uow, model, alias.version, field_name="reference")
    if ref.alias is None:
        production = uow.versions.in_stage(model.id, Stage.PRODUCTION)
        if production:
            return production[0]
    if model.latest_version is None:
        raise NotFound(f"Model {model.name!r} has no versions yet.")
    return _version(uow, model, model.latest_version, field_name="reference")


def safe_filename(name: str) -> str:
    """The last path component of a client-supplied filename, bounded; never a path."""
    base = posixpath.basename(name.replace("\\", "/")).strip().lstrip(".")
    return base[:255] or "artifact"
