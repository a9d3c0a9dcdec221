"""Automatic ONNX compilation of new versions: keep the compiled form only where its outputs match the
native model on a sample, and serve whichever of the two answered faster there.

Runs after the upload has committed (the version is servable natively at once); the result is
recorded on the version as ``serving``: the form that serves, why, the tolerance checked, the
largest difference seen and both latencies.
"""

from __future__ import annotations

import logging
import tempfile
from pathlib import Path
from typing import Any, Protocol
from uuid import uuid4

from aiservice.application.ports import ArtifactStore, LoadSpec, UnitOfWorkFactory, chunks
from aiservice.domain.events import ModelVersionCompiled
from aiservice.domain.models import Framework

COMPILABLE = frozenset({Framework.SKLEARN, Framework.XGBOOST, Framework.PYTORCH})
log = logging.getLogger(__name__)


class ModelCompiler(Protocol):
    def compile(self, artifact: Path, spec: LoadSpec, out: Path) -> dict[str, Any]:
        """Convert and check in isolation; the report says whether ``out`` holds a kept ONNX model."""
        ...


class OnnxCompilation:
    def __init__(
        self, uow: UnitOfWorkFactory, store: ArtifactStore, compiler: ModelCompiler, max_bytes: int
    ) -> None:
        self._uow = uow
        self._store = store
        self._compiler = compiler
        self._max_bytes = max_bytes

    def compile_version(self, tenant_id: str, model_id: str, number: int) -> dict[str, Any] | None:
        """Compile one version (idempotent: a version compiled before is left alone)."""
        with self._uow(tenant_id, writes=False) as uow:
            model = uow.models.get(model_id)
            version = uow.versions.get(model_id, number) if model else None
            tenant = uow.tenants.get(tenant_id)
        if (
            model is None
            or version is None
            or model.framework not in COMPILABLE
            or "compiled" in version.serving
        ):
            return None
        spec = LoadSpec(
            framework=model.framework,
            filename=version.artifact.filename,
            allow_pickle=bool(tenant and tenant.allow_pickle),
            configuration=version.serving_configuration(model),
        )
        source = self._store.local_path(version.artifact.key, version.artifact.digest)
        with tempfile.TemporaryDirectory(prefix="aiservice-onnx-") as folder:
            out = Path(folder) / "model.onnx"
            report = self._compiler.compile(source, spec, out)
            serving: dict[str, Any] = {"compiled": True, **report}
            if report.get("kept") and out.exists():
                serving["onnx"] = self._store_onnx(tenant_id, model_id, out, report.get("configuration", {}))
        serving.pop("configuration", None)
        with self._uow(tenant_id) as uow:
            version.serving = serving
            uow.versions.set_serving(version)
            uow.record(
                ModelVersionCompiled(
                    tenant_id=tenant_id,
                    aggregate_id=model_id,
                    version=number,
                    form=str(serving.get("form", "native")),
                    reason=str(serving.get("reason", "")),
                )
            )
            uow.commit()
        log.info("version %s of model %s compiled: %s", number, model_id, serving.get("reason"))
        return serving

    def _store_onnx(
        self, tenant_id: str, model_id: str, path: Path, configuration: dict[str, Any]
    ) -> dict[str, Any]:
        writer = self._store.writer(f"{tenant_id}/{model_id}/{uuid4().hex}.onnx", self._max_bytes)
        try:
            with path.open("rb") as handle:
                for chunk in chunks(handle):
                    writer.write(chunk)
            stored = writer.commit()
        except BaseException:
            writer.abort()
            raise
        return {
            "key": stored.key,
            "digest": stored.digest,
            "sizeBytes": stored.size_bytes,
            "configuration": configuration,
        }
