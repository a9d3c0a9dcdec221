"""Model optimisation: quantise, prune or halve a version, measure it against its source on a
validation sample, and register the result as a new version only when the accuracy drop is within
the caller's bound (ADR 0029).

The framework work (loading, transforming, measuring) is the ``ModelOptimizer`` port's; this use case
decides which form of the version is optimised (its own artifact, or its ONNX compilation), checks the
bound and registers the result through the ordinary version upload, so checksums, signature
inspection, quotas and events are those of any upload.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from aiservice.application.compilation import OnnxCompilation
from aiservice.application.ports import ArtifactStore, LoadSpec, UnitOfWorkFactory
from aiservice.application.registry import ModelRegistry, NewModel, find_model
from aiservice.application.versions import ModelVersions, VersionMetadata
from aiservice.domain.errors import FieldError, InvalidInput, NotFound
from aiservice.domain.models import Framework, JsonObject, Model, ModelVersion, runtime_configuration
from aiservice.domain.tenancy import Permission, Principal

METHODS = ("quantization", "pruning", "float16")
TORCH = Framework("pytorch")
MAX_SOURCE_BYTES = 512 * 1024**2  # optimised synchronously (off the event loop): small models only


@dataclass(frozen=True)
class OptimizationRequest:
    method: str
    validation_rows: list[list[float]]
    validation_labels: list[Any]
    max_accuracy_drop: float = 0.01
    mode: str = "dynamic"  # quantization: dynamic or static INT8
    form: str | None = None  # "native" or "onnx"; None: the framework's natural choice
    sparsity: float = 0.5  # pruning
    calibration_rows: list[list[float]] | None = None  # static quantization; else the validation rows
    target_model: str | None = None  # where an ONNX result of a non-ONNX model is registered
    description: str = ""
    latency_calls: int = 100

    def options(self) -> JsonObject:
        options: JsonObject = {"mode": self.mode} if self.method == "quantization" else {}
        if self.method == "pruning":
            options["sparsity"] = self.sparsity
        if self.method == "quantization" and self.mode == "static":
            options["calibrationRows"] = len(self.calibration_rows or self.validation_rows)
        return options


@dataclass(frozen=True)
class OptimizationJob:
    """What the optimizer is given: the form to transform (``framework`` names how to load it)."""

    method: str
    mode: str
    framework: Framework  # "onnx" or "pytorch"
    source: Path
    spec: LoadSpec
    rows: list[list[float]]
    labels: list[Any]
    task: str  # classification or regression
    sparsity: float
    calibration_rows: list[list[float]]
    latency_calls: int
    out_dir: Path


@dataclass(frozen=True)
class OptimizationOutcome:
    artifact: Path
    filename: str
    configuration: JsonObject  # the new version's (e.g. classes, inputShape)
    report: JsonObject  # accuracy/RMSE, size and latency, before and after
    drop: float  # accuracy lost (classification) or relative RMSE gained (regression)
    metric: str = "accuracy"
    extra: JsonObject = field(default_factory=dict)


class ModelOptimizer(Protocol):
    def optimize(self, job: OptimizationJob) -> OptimizationOutcome:
        """Transform ``job.source`` into a file under ``job.out_dir`` and measure both; InvalidInput when
        the method does not apply to this artifact."""
        ...


class ModelOptimization:
    def __init__(
        self,
        uow: UnitOfWorkFactory,
        store: ArtifactStore,
        versions: ModelVersions,
        registry: ModelRegistry,
        compilation: OnnxCompilation,
        optimizer: ModelOptimizer,
        work_dir: Path | None = None,
    ) -> None:
        self._uow = uow
        self._store = store
        self._versions = versions
        self._registry = registry
        self._compilation = compilation
        self._optimizer = optimizer
        self._work_dir = work_dir

    def optimize(
        self, principal: Principal, model_ident: str, number: int, request: OptimizationRequest
    ) -> ModelVersion:
        principal.require(Permission.VERSION_WRITE)
        _check(request)
        with self._uow(principal.tenant_id, writes=False) as uow:
            model = find_model(uow, model_ident, principal)
            version = uow.versions.get(model.id, number)
            tenant = uow.tenants.get(principal.tenant_id)
        if version is None:
            raise NotFound(
                f"Model {model.name!r} has no version {number}.",
                errors=[FieldError("path.version", "no such version")],
            )
        if version.artifact.size_bytes > MAX_SOURCE_BYTES:
            raise InvalidInput(
                f"Version {number} is {version.artifact.size_bytes} bytes; models up to "
                f"{MAX_SOURCE_BYTES} bytes are optimised.",
                errors=[FieldError("path.version", "too large to optimise in a request")],
            )
        framework, source, spec, configuration = self._source_form(
            principal, model, version, request, bool(tenant and tenant.allow_pickle)
        )
        task = str(version.signature.task) if version.signature else "classification"
        if task not in ("classification", "regression"):
            raise InvalidInput(
                f"Only classifiers and regressors are optimised (this version's task is {task!r}).",
                errors=[FieldError("path.version", "not a classifier or regressor")],
            )
        target = self._target(principal, model, framework, request)
        if self._work_dir is not None:
            self._work_dir.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(prefix="optimize-", dir=self._work_dir) as folder:
            outcome = self._optimizer.optimize(
                OptimizationJob(
                    method=request.method,
                    mode=request.mode,
                    framework=framework,
                    source=source,
                    spec=spec,
                    rows=request.validation_rows,
                    labels=request.validation_labels,
                    task=task,
                    sparsity=request.sparsity,
                    calibration_rows=request.calibration_rows or request.validation_rows,
                    latency_calls=request.latency_calls,
                    out_dir=Path(folder),
                )
            )
            figures = {**outcome.report, "maxAccuracyDrop": request.max_accuracy_drop}
            if outcome.drop > request.max_accuracy_drop:
                raise InvalidInput(
                    f"The {request.method} result loses {outcome.drop:.4g} of {outcome.metric} on the "
                    f"validation sample, more than maxAccuracyDrop {request.max_accuracy_drop:g}; "
                    "nothing was registered.",
                    errors=[FieldError("body.maxAccuracyDrop", f"the drop is {outcome.drop:.4g}")],
                    extra={"optimization": figures},
                    code="accuracy-drop-too-large",
                )
            metadata = VersionMetadata(
                description=request.description
                or f"{request.method} of {model.name} version {version.version}",
                metrics={f"{outcome.metric}After": outcome.report[f"{outcome.metric}After"]},
                params={"method": request.method, **request.options()},
                lineage={
                    "optimization": {
                        "method": request.method,
                        "options": request.options(),
                        "sourceModel": model.id,
                        "sourceVersion": version.version,
                        "sourceForm": "onnx" if framework != model.framework else "native",
                        **figures,
                    }
                },
                configuration={**configuration, **outcome.configuration},
            )
            return self._register(principal, target, outcome, metadata)

    def _source_form(
        self,
        principal: Principal,
        model: Model,
        version: ModelVersion,
        request: OptimizationRequest,
        allow_pickle: bool,
    ) -> tuple[Framework, Path, LoadSpec, JsonObject]:
        """The form optimised: the version's own artifact (ONNX, or torch for its own methods), else
        its ONNX compilation (compiled now when it has none yet)."""
        if request.form == "native" and model.framework not in (TORCH, Framework.ONNX):
            raise InvalidInput(
                f"{model.framework} versions are optimised through their ONNX compilation.",
                errors=[FieldError("body.form", "only torch models have a native form to optimise")],
            )
        native_torch = model.framework == TORCH and request.form != "onnx" and request.mode != "static"
        if model.framework == Framework.ONNX or (native_torch and request.method != "quantization"):
            if model.framework == Framework.ONNX and request.method == "pruning":
                raise _not_applicable(request, model, "pruning needs a torch model's weights")
            return self._native(model, version, allow_pickle)
        if native_torch:
            return self._native(model, version, allow_pickle)
        if request.method == "pruning":
            raise _not_applicable(request, model, "pruning needs a torch model's weights")
        if not version.serving.compiled:
            self._compilation.compile_version(principal.tenant_id, model.id, version.version)
            with self._uow(principal.tenant_id, writes=False) as uow:
                version = uow.versions.get(model.id, version.version) or version
        onnx = version.serving.onnx
        if onnx is None:
            reason = version.serving.reason if version.serving.compiled else "it has no ONNX converter"
            raise _not_applicable(request, model, f"this version has no ONNX compilation ({reason})")
        configuration = dict(onnx.configuration)
        spec = LoadSpec(Framework.ONNX, "model.onnx", configuration=configuration)
        return Framework.ONNX, self._store.local_path(onnx.key, onnx.digest), spec, configuration

    def _native(
        self, model: Model, version: ModelVersion, allow_pickle: bool
    ) -> tuple[Framework, Path, LoadSpec, JsonObject]:
        configuration = runtime_configuration(model, version.configuration)
        spec = LoadSpec(
            model.framework, version.artifact.filename, allow_pickle=allow_pickle, configuration=configuration
        )
        path = self._store.local_path(version.artifact.key, version.artifact.digest)
        return model.framework, path, spec, dict(version.configuration)

    def _target(
        self, principal: Principal, model: Model, framework: Framework, request: OptimizationRequest
    ) -> Model:
        """The model the new version joins: the source's own when the framework is the same, else an
        ONNX model (``targetModel``, by default ``<name>-onnx``), created when it does not exist."""
        if framework == model.framework:
            if request.target_model not in (None, model.name, model.id):
                raise InvalidInput(
                    "targetModel is only for results in another framework than the model's.",
                    errors=[FieldError("body.targetModel", "the result stays in the source model")],
                )
            return model
        name = request.target_model or f"{model.name}-onnx"
        with self._uow(principal.tenant_id, writes=False) as uow:
            try:
                target = find_model(uow, name, principal)
            except NotFound:
                target = None
        if target is None:
            return self._registry.create_model(
                principal,
                NewModel(
                    name=name,
                    framework=Framework.ONNX,
                    description=f"ONNX optimisations of {model.name}",
                ),
            )
        if target.framework != Framework.ONNX:
            raise InvalidInput(
                f"Model {target.name!r} is a {target.framework} model; the result is an ONNX file.",
                errors=[FieldError("body.targetModel", "not an ONNX model")],
            )
        return target

    def _register(
        self, principal: Principal, target: Model, outcome: OptimizationOutcome, metadata: VersionMetadata
    ) -> ModelVersion:
        return self._versions.upload_file(principal, target.id, outcome.artifact, outcome.filename, metadata)


def _check(request: OptimizationRequest) -> None:
    problems: list[FieldError] = []
    if request.method not in METHODS:
        problems.append(FieldError("body.method", f"use one of {', '.join(METHODS)}"))
    if request.mode not in ("dynamic", "static"):
        problems.append(FieldError("body.mode", "use dynamic or static"))
    if request.form not in (None, "native", "onnx"):
        problems.append(FieldError("body.form", "use native or onnx"))
    if not 0 < request.sparsity < 1:
        problems.append(FieldError("body.sparsity", "must be between 0 and 1, both excluded"))
    if request.max_accuracy_drop < 0:
        problems.append(FieldError("body.maxAccuracyDrop", "must be 0 or more"))
    rows = request.validation_rows
    if not rows:
        problems.append(FieldError("body.validation.rows", "at least one row"))
    elif len({len(r) for r in rows}) != 1:
        problems.append(FieldError("body.validation.rows", "every row needs the same number of values"))
    if len(request.validation_labels) != len(rows):
        problems.append(FieldError("body.validation.labels", "one label per row"))
    calibration = request.calibration_rows
    if calibration is not None and rows and any(len(r) != len(rows[0]) for r in calibration):
        problems.append(FieldError("body.calibrationRows", "rows as wide as the validation rows"))
    if problems:
        raise InvalidInput("The optimisation request is not valid.", errors=problems)


def _not_applicable(request: OptimizationRequest, model: Model, why: str) -> InvalidInput:
    return InvalidInput(
        f"{request.method} does not apply to this {model.framework} version: {why}.",
        errors=[FieldError("body.method", why)],
        code="method-not-applicable",
    )
