"""Edge export: a version as a self-contained zip bundle (the model in ONNX, TorchScript or TFLite, its
schema, a README and a small reference runner) for running without the service (ADR 30).

ONNX comes from the version's compiled form (ADR 6), the artifact itself for ONNX models, or a
compilation run now for a compilable framework; TorchScript and TFLite are converted by the bundle
builder in an isolated child process. Exporting reads the version like a download of its artifact:
the same permission, and the same audit (refusals and failures only; ADR 9).

Versions are immutable, so a built bundle is kept in the work folder and served again, named by a
fingerprint of everything it is made of (tenant, model, version, the artifact's key and checksum, the
compiled ONNX form, the format, ``BUNDLE_FORMAT`` and the schema written into it) and by its own
sha256, the strong ETag. Another artifact or a changed schema is another name, so a stale bundle is
never served; entries are named like compile folders, so the sweeper of those removes one unused for
longer than a compilation may take (each use renews it), and a deleted model or erased tenant's
bundles go with that sweep (they are never served meanwhile: the version is looked up first).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import tempfile
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any, Protocol

from aiservice.application.compilation import COMPILE_FOLDER, ModelCompiler
from aiservice.application.frameworks import FrameworkCatalog
from aiservice.application.ports import ArtifactStore, LoadSpec, UnitOfWorkFactory
from aiservice.application.registry import find_model
from aiservice.domain.errors import FieldError, InvalidInput, NotFound
from aiservice.domain.models import Framework, Model, ModelVersion
from aiservice.domain.tenancy import Permission, Principal

FORMAT_FIELD = "query.format"
# Each export's scratch folder, in the compile work folder and named like a compilation's, so the
# sweeper of compile folders takes one a crash left behind.
EXPORT_FOLDER = f"{COMPILE_FOLDER}export-"
# Built bundles, kept in the same work folder: onnx-bundle-<fingerprint>-<sha256>.zip; named like
# compile folders too, so the same sweeper removes those left unused (see the module's docstring).
CACHE_PREFIX = f"{COMPILE_FOLDER}bundle-"
# What a bundle holds and how it is laid out; bump it when the builder writes bundles differently, so
# that bundles built before are no longer served.
BUNDLE_FORMAT = 1
_HASH_CHUNK = 1 << 20
log = logging.getLogger(__name__)


class ExportFormat(StrEnum):
    ONNX = "onnx"
    TORCHSCRIPT = "torchscript"
    TFLITE = "tflite"


# The frameworks whose versions convert to each native edge format.
CONVERTED_FROM: dict[ExportFormat, frozenset[str]] = {
    ExportFormat.TORCHSCRIPT: frozenset({"pytorch"}),
    ExportFormat.TFLITE: frozenset({"keras", "tensorflow"}),
}


@dataclass(frozen=True)
class BundleRequest:
    """What the builder writes into a bundle besides the model file."""

    format: ExportFormat
    model_name: str
    framework: str
    version: int
    schema: dict[str, Any]


class BundleBuilder(Protocol):
    def convert(self, artifact: Path, spec: LoadSpec, format: ExportFormat, out: Path) -> str | None:
        """Convert a native artifact into ``out`` in isolation; None, or why it cannot be converted."""
        ...

    def bundle(self, model_file: Path, request: BundleRequest, out: Path) -> None:
        """Write the zip bundle to ``out``."""
        ...


@dataclass(frozen=True)
class ExportBundle:
    """A built bundle: in the cache (``discard`` leaves it there), or, without a work folder, in a
    scratch folder that ``discard`` removes once it is sent."""

    path: Path
    filename: str
    sha256: str  # of the zip's bytes: its strong ETag
    cached: bool = True

    def discard(self) -> None:
        if not self.cached:
            shutil.rmtree(self.path.parent, ignore_errors=True)


class ModelExports:
    def __init__(
        self,
        uow: UnitOfWorkFactory,
        store: ArtifactStore,
        builder: BundleBuilder,
        compiler: ModelCompiler,
        frameworks: FrameworkCatalog,
        work_dir: Path | None = None,
    ) -> None:
        """``work_dir`` holds scratch folders and built bundles (without one, nothing is kept)."""
        self._uow = uow
        self._store = store
        self._builder = builder
        self._compiler = compiler
        self._frameworks = frameworks
        self._work_dir = work_dir

    @staticmethod
    def parse_format(text: str) -> ExportFormat:
        try:
            return ExportFormat(text)
        except ValueError:
            known = ", ".join(f.value for f in ExportFormat)
            raise _format_error(f"Unknown export format {text!r}; use one of {known}.") from None

    def export(self, principal: Principal, model_ident: str, number: int, format_text: str) -> ExportBundle:
        """The version's bundle, built unless the cache has it (blocking: seconds of conversion; call it
        off the event loop)."""
        principal.require(Permission.MODEL_READ)  # as a download of the artifact
        export_format = self.parse_format(format_text)
        with self._uow(principal.tenant_id, writes=False) as uow:
            model = find_model(uow, model_ident, principal)
            version = uow.versions.get(model.id, number)
            tenant = uow.tenants.get(principal.tenant_id)
        if version is None:  # checked before the cache: a deleted version's bundle is never served
            raise NotFound(f"Model {model.name!r} has no version {number}.")
        self._check_framework(model, export_format)
        spec = LoadSpec(
            framework=model.framework,
            filename=version.artifact.filename,
            allow_pickle=bool(tenant and tenant.allow_pickle),
            configuration=version.serving_configuration(model),
        )
        filename = f"{model.name}-v{number}-{export_format.value}.zip"
        request = BundleRequest(
            export_format, model.name, model.framework.value, number, _schema(model, version)
        )
        fingerprint = _fingerprint(model, version, request)
        if (hit := self._cached(fingerprint)) is not None:
            return ExportBundle(hit, filename, _digest_of(hit))
        if self._work_dir is not None:
            self._work_dir.mkdir(parents=True, exist_ok=True)
        folder = Path(tempfile.mkdtemp(prefix=EXPORT_FOLDER, dir=self._work_dir))
        try:
            model_file = self._model_file(model, version, spec, export_format, folder)
            out = folder / filename
            self._builder.bundle(model_file, request, out)
            digest = _sha256(out)
        except BaseException:
            shutil.rmtree(folder, ignore_errors=True)
            raise
        log.info(
            "export bundle built: version %s of model %s as %s (sha256 %s)",
            number,
            model.id,
            export_format.value,
            digest,
        )
        if self._work_dir is None:
            return ExportBundle(out, filename, digest, cached=False)
        try:
            kept = self._keep(self._work_dir, out, fingerprint, digest)
        finally:
            shutil.rmtree(folder, ignore_errors=True)
        return ExportBundle(kept, filename, _digest_of(kept))

    def _cached(self, fingerprint: str) -> Path | None:
        """The kept bundle of this fingerprint, renewed (so the sweeper leaves it while it is used)."""
        if self._work_dir is None:
            return None
        for path in sorted(self._work_dir.glob(f"{CACHE_PREFIX}{fingerprint}-*.zip")):
            try:
                os.utime(path)
            except FileNotFoundError:  # swept meanwhile
                continue
            return path
        return None

    def _keep(self, work_dir: Path, built: Path, fingerprint: str, digest: str) -> Path:
        """Move a built bundle into the cache, unless a concurrent export kept one first (served then,
        so every caller gets the same bytes and ETag)."""
        if (hit := self._cached(fingerprint)) is not None:
            return hit
        target = work_dir / f"{CACHE_PREFIX}{fingerprint}-{digest}.zip"
        os.replace(built, target)  # atomic: a reader sees the whole bundle or none
        return target

    def _check_framework(self, model: Model, export_format: ExportFormat) -> None:
        framework = model.framework.value
        if export_format == ExportFormat.ONNX:
            if framework != Framework.ONNX.value and not self._frameworks.has(model.framework, "compilable"):
                raise _format_error(f"{framework} models are not converted to ONNX.")
            return
        if framework not in CONVERTED_FROM[export_format]:
            allowed = " or ".join(sorted(CONVERTED_FROM[export_format]))
            raise _format_error(
                f"{export_format.value} bundles are made from {allowed} models; this one is {framework}."
            )

    def _model_file(
        self, model: Model, version: ModelVersion, spec: LoadSpec, export_format: ExportFormat, folder: Path
    ) -> Path:
        out = folder / f"model.{_EXTENSIONS[export_format]}"
        if export_format == ExportFormat.ONNX:
            if model.framework.value == Framework.ONNX.value:
                self._copy(version.artifact.key, version.artifact.digest, out)
                return out
            compiled = version.serving.onnx
            if compiled is not None:
                self._copy(compiled.key, compiled.digest, out)
                return out
            source = self._store.local_path(version.artifact.key, version.artifact.digest)
            report = self._compiler.compile(source, spec, out)
            if not report.get("kept") or not out.exists():
                reason = report.get("reason") or "the conversion failed"
                raise _format_error(f"This version has no ONNX form: {reason}.")
            return out
        source = self._store.local_path(version.artifact.key, version.artifact.digest)
        why_not = self._builder.convert(source, spec, export_format, out)
        if why_not is not None or not out.exists():
            raise _format_error(f"This version cannot be converted to {export_format.value}: {why_not}.")
        return out

    def _copy(self, key: str, digest: str, out: Path) -> None:
        with self._store.open(key, digest) as source, out.open("wb") as target:
            shutil.copyfileobj(source, target)


_EXTENSIONS = {ExportFormat.ONNX: "onnx", ExportFormat.TORCHSCRIPT: "pt", ExportFormat.TFLITE: "tflite"}


def _fingerprint(model: Model, version: ModelVersion, request: BundleRequest) -> str:
    """Everything a bundle is made of; versions are immutable, the model's schemas are not."""
    compiled = version.serving.onnx if request.format == ExportFormat.ONNX else None
    made_of = {
        "bundleFormat": BUNDLE_FORMAT,
        "tenant": model.tenant_id,
        "model": model.id,
        "version": version.version,
        "artifact": [version.artifact.key, version.artifact.digest],
        "compiled": [compiled.key, compiled.digest] if compiled is not None else None,
        "format": request.format.value,
        "name": request.model_name,
        "framework": request.framework,
        "schema": request.schema,
    }
    encoded = json.dumps(made_of, sort_keys=True, default=str, separators=(",", ":")).encode()
    return hashlib.sha256(encoded).hexdigest()


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(_HASH_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def _digest_of(kept: Path) -> str:
    """A kept bundle's sha256, from its name (``...-<sha256>.zip``)."""
    return kept.name.removesuffix(".zip").rpartition("-")[2]


def _format_error(message: str) -> InvalidInput:
    return InvalidInput(message, errors=[FieldError(FORMAT_FIELD, message)])


def _schema(model: Model, version: ModelVersion) -> dict[str, Any]:
    """What the runner needs: the columns in the model's order, the task and the labels."""
    signature = version.signature
    classes = model.output_schema.get("classes")
    if classes is None and signature is not None and signature.classes is not None:
        classes = list(signature.classes)
    features = [f.get("name") for f in model.input_schema.get("features") or [] if isinstance(f, dict)]
    if not features and signature is not None and signature.columns:
        features = [c.name for c in signature.columns]
    if not features and signature is not None and signature.feature_names:
        features = list(signature.feature_names)
    return {
        "model": model.name,
        "framework": model.framework.value,
        "version": version.version,
        "task": signature.task if signature is not None else "other",
        "features": [str(f) for f in features if f is not None] or None,
        "classes": classes,
        "inputSchema": model.input_schema,
        "outputSchema": model.output_schema,
        "signature": signature.to_json() if signature is not None else None,
    }
