"""Importing models from folders users already have: an MLflow ``MLmodel`` folder or a Hugging
Face-style folder, uploaded as one zip or tar.gz archive.

The archive streams into the artifact store like any upload (bounded, under the upload deadline,
held in flight); a ``ModelFolderReader`` unpacks it with the archive checks and turns the folder into
one artifact a runtime already serves (an ONNX graph, an XGBoost model, a skops file, a torch
state_dict of a declared architecture) without importing MLflow or transformers. That artifact is then
registered through ``ModelVersions`` like an upload, so checksums, the isolated inspection, the schema
check, quotas and ``ModelVersionCreated`` stay the same. Pickled flavors are refused (ADR 0005).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import AbstractContextManager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Protocol

from aiservice.application.ports import ArtifactStore, UnitOfWorkFactory
from aiservice.application.registry import find_model
from aiservice.application.version_upload import VersionUpload
from aiservice.application.versions import ModelVersions, VersionMetadata
from aiservice.domain.errors import FieldError, InvalidInput
from aiservice.domain.models import JsonObject, ModelVersion
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
        self, versions: ModelVersions, store: ArtifactStore, uow: UnitOfWorkFactory, reader: ModelFolderReader
    ) -> None:
        self._versions = versions
        self._store = store
        self._uow = uow
        self._reader = reader

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
                return self._register(upload.principal, upload.model_id, imported, metadata)
        finally:
            self._store.delete(archive.key)
            upload.done()

    def _register(
        self, principal: Principal, model_id: str, imported: ImportedModel, metadata: VersionMetadata
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
        return self._versions.finish_upload(upload, imported.filename, merged)


def _chunks(path: Path) -> Iterator[bytes]:
    with path.open("rb") as handle:
        while chunk := handle.read(_CHUNK):
            yield chunk
