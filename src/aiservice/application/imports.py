"""Importing models from folders users already have: an MLflow ``MLmodel`` folder or a Hugging
Face-style folder, uploaded as one zip or tar.gz archive.

The archive streams into the artifact store like any upload (bounded, under the upload deadline,
held in flight); a ``ModelFolderReader`` unpacks it with the archive checks and turns the folder into
one artifact a runtime already serves (an ONNX graph, an XGBoost model, a skops file, a torch
state_dict of a declared architecture) without importing MLflow or transformers. That artifact is then
registered through ``ModelVersions`` like an upload, so checksums, the isolated inspection, the schema
check, quotas and ``ModelVersionCreated`` stay the same. Pickled flavors are refused (ADR 0005).

A folder's own schemas (an MLflow signature) are applied as MLflow users expect: a model that declares
no input schema yet takes the signature's (and its output schema, where it declares none) as a model
update (``Model.update``: ``ModelUpdated`` and the audited diff) in the transaction that records the
version, so a refused version changes nothing; a model whose declared input schema names other
features than the signature is refused before anything is stored (ADR 0031).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Protocol

from aiservice.application.audit import note_changes
from aiservice.application.ports import ArtifactStore, Clock, UnitOfWork, UnitOfWorkFactory
from aiservice.application.registry import find_model
from aiservice.application.version_upload import VersionUpload
from aiservice.application.versions import ModelVersions, VersionMetadata
from aiservice.domain.clock import utcnow
from aiservice.domain.errors import FieldError, InvalidArtifact, InvalidInput, NotFound
from aiservice.domain.models import JsonObject, Model, ModelVersion
from aiservice.domain.schemas import (
    InputSchema,
    TabularSchema,
    TensorSchema,
    parse_input_schema,
    parse_output_schema,
    signature_mismatches,
)
from aiservice.domain.tenancy import Permission, Principal

SOURCES = ("mlflow", "huggingface")
_CHUNK = 1 << 20


@dataclass(frozen=True)
class ImportedModel:
    """What a folder turned into: one artifact file of a framework, and what to record with it."""

    framework: str
    path: Path  # the artifact, inside the reader's scratch folder
    filename: str
    flavor: str  # the MLflow flavor or Hugging Face architecture it came from
    configuration: JsonObject = field(default_factory=dict)  # the version's own (classes, architecture)
    lineage: JsonObject = field(default_factory=dict)
    schemas: JsonObject = field(default_factory=dict)  # ``inputSchema``/``outputSchema`` the folder declares


class ModelFolderReader(Protocol):
    def read(
        self, archive: Path, archive_name: str, source: str | None, framework: str
    ) -> AbstractContextManager[ImportedModel]:
        """Unpack ``archive`` (checked: paths, links, counts, sizes) and read its folder as ``source``
        (``None``: told by its files), preferring ``framework``'s flavor; the artifact lives until the
        context ends. ``InvalidArtifact``/``UnsafeArchive``/``UntrustedArtifact`` for what cannot be read."""
        ...


@dataclass
class ImportUpload:
    """An archive being received for a model of ``framework``."""

    upload: VersionUpload
    framework: str


class ModelImports:
    def __init__(
        self,
        versions: ModelVersions,
        store: ArtifactStore,
        uow: UnitOfWorkFactory,
        reader: ModelFolderReader,
        clock: Clock = utcnow,
    ) -> None:
        self._versions = versions
        self._store = store
        self._uow = uow
        self._reader = reader
        self._clock = clock

    def start(self, principal: Principal, model_ident: str) -> ImportUpload:
        """Check the caller may add versions to the model, then open a staging writer for the archive."""
        principal.require(Permission.VERSION_WRITE)
        with self._uow(principal.tenant_id, writes=False) as uow:
            model = find_model(uow, model_ident, principal)
        return ImportUpload(self._versions.start_upload(principal, model.id), model.framework.value)

    def finish(
        self, staged: ImportUpload, archive_name: str, source: str | None, metadata: VersionMetadata
    ) -> ModelVersion:
        """Read the staged archive and register what it holds as the model's next version. The archive's
        bytes are removed whatever happens; the version's are kept only if it is recorded."""
        if source is not None and source not in SOURCES:
            staged.upload.abort()
            raise InvalidInput(
                f"Unknown import source {source!r}; use one of {', '.join(SOURCES)}.",
                errors=[FieldError("form.source", f"must be one of {', '.join(SOURCES)}")],
            )
        upload = staged.upload
        try:
            upload.check_deadline()
            archive = upload.writer.commit()
        except BaseException:
            upload.done()
            raise
        try:
            path = self._store.local_path(archive.key, archive.digest, verify=False)
            with self._reader.read(path, archive_name, source, staged.framework) as imported:
                if imported.framework != staged.framework:
                    raise InvalidInput(
                        f"The folder holds a {imported.framework} model ({imported.flavor}); this model "
                        f"is {staged.framework}: import it into a {imported.framework} model.",
                        errors=[FieldError("form.file", f"holds a {imported.framework} model")],
                    )
                changes = self._schema_changes(upload.principal, upload.model_id, imported)
                return self._register(upload.principal, upload.model_id, imported, metadata, changes)
        finally:
            self._store.delete(archive.key)
            upload.done()

    def _schema_changes(self, principal: Principal, model_id: str, imported: ImportedModel) -> JsonObject:
        """The model update the folder's schemas make (none when it declares none, or when the model
        already declares an input schema that agrees); ``InvalidArtifact`` when they disagree."""
        declared = imported.schemas.get("inputSchema")
        if not isinstance(declared, dict) or not declared:
            return {}
        incoming = _parse_signature(declared)
        with self._uow(principal.tenant_id, writes=False) as uow:
            model = uow.models.get(model_id)
        if model is None:
            raise NotFound(f"Model {model_id!r} was deleted during the upload.")
        if model.input_schema:
            _check_agrees(model, incoming)
            return {}
        principal.require(Permission.MODEL_WRITE)  # the import changes the model's schema
        changes: JsonObject = {"input_schema": declared}
        output = imported.schemas.get("outputSchema")
        if isinstance(output, dict) and output and not model.output_schema:
            parse_output_schema(output, "signature.outputSchema")
            changes["output_schema"] = output
        return changes

    def _apply_schemas(self, changes: JsonObject) -> Callable[[UnitOfWork, ModelVersion], None]:
        """Set the schemas in the version's transaction, as ``ModelRegistry.update_model`` does (the
        domain's update, the audited diff, ``ModelUpdated``); raising there records nothing."""

        def apply(uow: UnitOfWork, version: ModelVersion) -> None:
            model = uow.models.get(version.model_id)
            if model is None:
                raise NotFound(f"Model {version.model_id!r} was deleted during the upload.")
            if model.input_schema:  # declared meanwhile: it must still agree, and it stays
                _check_agrees(model, _parse_signature(changes["input_schema"]))
                return
            wanted = {k: v for k, v in changes.items() if k != "output_schema" or not model.output_schema}
            before = {name: getattr(model, name) for name in wanted}
            changed = model.update(wanted, self._clock())
            if version.signature is not None:
                problems = signature_mismatches(
                    parse_input_schema(model.input_schema),
                    parse_output_schema(model.output_schema),
                    version.signature,
                )
                if problems:
                    raise InvalidArtifact(
                        "The model file does not match its own MLflow signature: "
                        + "; ".join(f"{p.field}: {p.message}" for p in problems)
                        + ".",
                        errors=[FieldError("signature", p.message) for p in problems],
                    )
            if changed:
                note_changes(before, {name: getattr(model, name) for name in changed})
                uow.models.save(model)

        return apply

    def _register(
        self,
        principal: Principal,
        model_id: str,
        imported: ImportedModel,
        metadata: VersionMetadata,
        changes: JsonObject,
    ) -> ModelVersion:
        upload = self._versions.start_upload(principal, model_id)
        try:
            for chunk in _chunks(imported.path):
                upload.write(chunk)
        except BaseException:
            upload.abort()
            raise
        merged = replace(
            metadata,
            lineage={**imported.lineage, **metadata.lineage},
            configuration={**imported.configuration, **metadata.configuration},
        )
        on_commit = self._apply_schemas(changes) if changes else None
        return self._versions.finish_upload(upload, imported.filename, merged, on_commit=on_commit)


def _parse_signature(schema: JsonObject) -> InputSchema | None:
    try:
        return parse_input_schema(schema, "signature.inputSchema")
    except InvalidInput as exc:
        raise InvalidArtifact(
            f"The MLflow signature's inputs are not a usable input schema: {exc.detail}",
            errors=exc.errors or [FieldError("signature", "not a usable input schema")],
        ) from exc


def _check_agrees(model: Model, incoming: InputSchema | None) -> None:
    """Refuse a signature whose features (names and count, or one sample's shape) are not the ones
    the model declares; kinds that cannot be compared are left to the artifact's own check."""
    problem = _disagreement(parse_input_schema(model.input_schema), incoming)
    if problem is not None:
        raise InvalidArtifact(
            f"The folder's MLflow signature does not match model {model.name!r}'s declared input schema: "
            f"{problem}. Import it into a model without an input schema, or change the declared one.",
            errors=[FieldError("signature", problem)],
        )


def _disagreement(declared: InputSchema | None, incoming: InputSchema | None) -> str | None:
    if declared is None or incoming is None:
        return None
    if isinstance(declared, TabularSchema) and isinstance(incoming, TabularSchema):
        ours, theirs = declared.names, incoming.names
        if len(ours) != len(theirs):
            return f"the model declares {len(ours)} features, the signature {len(theirs)}"
        if set(ours) != set(theirs):
            return f"the model declares the features {ours}, the signature {theirs}"
        return None
    if isinstance(declared, TensorSchema) and isinstance(incoming, TensorSchema):
        if len(declared.shape) != len(incoming.shape) or any(
            a > 0 and b > 0 and a != b for a, b in zip(declared.shape, incoming.shape, strict=True)
        ):
            return (
                f"the model declares samples of shape {list(declared.shape)}, the signature "
                f"{list(incoming.shape)}"
            )
        return None
    if isinstance(declared, TabularSchema) and isinstance(incoming, TensorSchema):
        if len(incoming.shape) == 1 and incoming.shape[0] > 0 and incoming.shape[0] != len(declared.features):
            return (
                f"the model declares {len(declared.features)} features, the signature takes "
                f"{incoming.shape[0]} values a sample"
            )
    return None


def _chunks(path: Path) -> Iterator[bytes]:
    with path.open("rb") as handle:
        while chunk := handle.read(_CHUNK):
            yield chunk
