"""Automatic ONNX compilation of new versions: keep the compiled form only where its outputs match the
native model on a sample, and serve whichever of the two answered faster there.

Runs after the upload has committed (the version is servable natively at once); the result is
recorded on the version as ``serving``: the form that serves, why, the tolerance checked, the
largest difference seen and both latencies. The compiled form's key is held in flight from its first
byte until that record commits, so the sweeper of leftovers never takes it for an orphan.
"""

from __future__ import annotations

import logging
import tempfile
from dataclasses import replace
from pathlib import Path
from typing import Any, Protocol

from aiservice.application.artifact_keys import InFlightKeys, new_artifact_key
from aiservice.application.frameworks import FrameworkCatalog
from aiservice.application.ports import ArtifactStore, LoadSpec, UnitOfWorkFactory, chunks
from aiservice.domain.events import ModelVersionCompiled
from aiservice.domain.models import CompiledForm, ModelVersion, ServingRecord

COMPILE_FOLDER = "onnx-"  # each compilation's scratch folder in the work folder: onnx-<random>
log = logging.getLogger(__name__)


class ModelCompiler(Protocol):
    def compile(self, artifact: Path, spec: LoadSpec, out: Path) -> dict[str, Any]:
        """Convert and check in isolation; the report says whether ``out`` holds a kept ONNX model."""
        ...


class OnnxCompilation:
    def __init__(
        self,
        uow: UnitOfWorkFactory,
        store: ArtifactStore,
        compiler: ModelCompiler,
        max_bytes: int,
        frameworks: FrameworkCatalog,
        in_flight: InFlightKeys | None = None,
        work_dir: Path | None = None,
    ) -> None:
        """``work_dir`` holds each compilation's scratch folder (the system's temporary folder if None)."""
        self._uow = uow
        self._store = store
        self._compiler = compiler
        self._frameworks = frameworks  # those whose plugin converts to ONNX are compiled
        self._max_bytes = max_bytes
        self._in_flight = in_flight or InFlightKeys()
        self._work_dir = work_dir

    def compile_version(self, tenant_id: str, model_id: str, number: int) -> dict[str, Any] | None:
        """Compile one version (idempotent: a version compiled before is left alone)."""
        with self._uow(tenant_id, writes=False) as uow:
            model = uow.models.get(model_id)
            version = uow.versions.get(model_id, number) if model else None
            tenant = uow.tenants.get(tenant_id)
        if (
            model is None
            or version is None
            or not self._frameworks.has(model.framework, "compilable")
            or version.serving.compiled
        ):
            return None
        spec = LoadSpec(
            framework=model.framework,
            filename=version.artifact.filename,
            allow_pickle=bool(tenant and tenant.allow_pickle),
            configuration=version.serving_configuration(model),
        )
        source = self._store.local_path(version.artifact.key, version.artifact.digest)
        key = new_artifact_key(tenant_id, model_id, ".onnx")
        with self._in_flight.holding(key):
            if self._work_dir is not None:
                self._work_dir.mkdir(parents=True, exist_ok=True)
            with tempfile.TemporaryDirectory(prefix=COMPILE_FOLDER, dir=self._work_dir) as folder:
                out = Path(folder) / "model.onnx"
                report = self._compiler.compile(source, spec, out)
                configuration = report.pop("configuration", None) or {}
                onnx = (
                    self._store_onnx(key, out, configuration) if report.get("kept") and out.exists() else None
                )
            serving = replace(ServingRecord.from_json(report), compiled=True, onnx=onnx)
            self._record(tenant_id, model_id, version, serving)
        log.info("version %s of model %s compiled: %s", number, model_id, serving.reason)
        return serving.to_json()

    def _record(self, tenant_id: str, model_id: str, version: ModelVersion, serving: ServingRecord) -> None:
        with self._uow(tenant_id) as uow:
            version.serving = serving
            uow.versions.set_serving(version)
            uow.record(
                ModelVersionCompiled(
                    tenant_id=tenant_id,
                    aggregate_id=model_id,
                    version=version.version,
                    form=serving.form,
                    reason=serving.reason,
                )
            )
            uow.commit()

    def _store_onnx(self, key: str, path: Path, configuration: dict[str, Any]) -> CompiledForm:
        writer = self._store.writer(key, self._max_bytes)
        try:
            with path.open("rb") as handle:
                for chunk in chunks(handle):
                    writer.write(chunk)
            stored = writer.commit()
        except BaseException:
            writer.abort()
            raise
        return CompiledForm(stored.key, stored.digest, stored.size_bytes, configuration)
