"""Model optimisation: quantise, prune or halve a version, measure it against its source on a
validation sample, and register the result as a new version only when the accuracy drop is within
the caller's bound (ADR 0029).

The framework work (loading, transforming, measuring) is the ``ModelOptimizer`` port's; this use case
decides which form of the version is optimised (its own artifact, or its ONNX compilation), checks the
bound and registers the result through the ordinary version upload, so checksums, signature
inspection, quotas and events are those of any upload.

The validation (and static INT8's calibration) rows come inline or from a dataset the service reads
(``datasetConfig``: ``dataset://NAME`` of the caller's tenant, a path under the dataset roots, S3). A
dataset is checked as a training request's is (``training_data.check_data``), then the ``TableSamples``
port draws a seeded uniform sample of the version's feature columns (and the target) while reading it
batch by batch, so memory is bounded by the sample, not by the dataset.
"""

from __future__ import annotations

import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from aiservice.application.compilation import OnnxCompilation
from aiservice.application.ports import ArtifactStore, LoadSpec, UnitOfWorkFactory
from aiservice.application.registry import ModelRegistry, NewModel, find_model
from aiservice.application.serving.routing import effective_input_schema
from aiservice.application.training_data import TARGET_FIELD, DatasetAccess, check_data
from aiservice.application.versions import ModelVersions, VersionMetadata
from aiservice.domain.errors import FieldError, InvalidInput, NotFound
from aiservice.domain.models import Framework, JsonObject, Model, ModelVersion, runtime_configuration
from aiservice.domain.schemas import TabularSchema
from aiservice.domain.tenancy import Permission, Principal
from aiservice.domain.training import DatasetConfig

METHODS = ("quantization", "pruning", "float16")
TORCH = Framework("pytorch")
MAX_SOURCE_BYTES = 512 * 1024**2  # optimised synchronously (off the event loop): small models only
DEFAULT_SAMPLE = 1000  # rows of a dataset measured (or calibrated on) when the request says none
MAX_SAMPLE = 100_000
MAX_SAMPLE_VALUES = 20_000_000  # rows x features of one sample: 160 MB of float64 while it is read
SAMPLE_SEED = 0  # one dataset gives one sample: optimising twice measures on the same rows
SAMPLED_FORMATS = ("csv", "parquet")


@dataclass(frozen=True)
class DatasetSample:
    """``{datasetConfig, sample}``: at most ``rows`` rows of a dataset, a seeded uniform sample."""

    dataset: DatasetConfig
    rows: int = DEFAULT_SAMPLE


@dataclass(frozen=True)
class SampledTable:
    rows: np.ndarray  # float32 (N, F): the features, in the order asked
    labels: np.ndarray | None  # (N,): the target as typed for training; None when none was asked
    dataset_rows: int  # rows in the whole dataset (every one is read to draw the sample)


class TableSamples(Protocol):
    def sample(
        self,
        uri: str,
        format: str,
        features: Sequence[str],
        target: str | None,
        rows: int,
        seed: int,
        field: str,
    ) -> SampledTable:
        """A uniform sample of at most ``rows`` rows of a resolved csv or parquet dataset (file or
        folder), seeded by ``seed`` (every row, in order, when it holds fewer), read batch by batch;
        ``InvalidInput`` naming ``field`` when the values cannot be read as numbers and labels."""
        ...


@dataclass(frozen=True)
class OptimizationRequest:
    method: str
    validation_rows: list[list[float]] = field(default_factory=list)
    validation_labels: list[Any] = field(default_factory=list)
    validation_dataset: DatasetSample | None = None  # instead of the inline rows and labels
    max_accuracy_drop: float = 0.01
    mode: str = "dynamic"  # quantization: dynamic or static INT8
    form: str | None = None  # "native" or "onnx"; None: the framework's natural choice
    sparsity: float = 0.5  # pruning
    calibration_rows: list[list[float]] | None = None  # static quantization; else the validation rows
    calibration_dataset: DatasetSample | None = None  # instead of calibration_rows
    target_model: str | None = None  # where an ONNX result of a non-ONNX model is registered
    description: str = ""
    latency_calls: int = 100

    @property
    def static(self) -> bool:
        return self.method == "quantization" and self.mode == "static"

    def options(self, calibration_rows: int) -> JsonObject:
        options: JsonObject = {"mode": self.mode} if self.method == "quantization" else {}
        if self.method == "pruning":
            options["sparsity"] = self.sparsity
        if self.static:
            options["calibrationRows"] = calibration_rows
        return options


@dataclass(frozen=True)
class _Rows:
    """Rows the optimizer is given, and where they came from (recorded with the new version)."""

    rows: np.ndarray
    labels: np.ndarray
    source: JsonObject
    field: str  # the request's field that chose the columns: where a width problem is reported


@dataclass(frozen=True)
class OptimizationJob:
    """What the optimizer is given: the form to transform (``framework`` names how to load it)."""

    method: str
    mode: str
    framework: Framework  # "onnx" or "pytorch"
    source: Path
    spec: LoadSpec
    rows: np.ndarray  # float32 (N, F)
    labels: np.ndarray  # (N,)
    task: str  # classification or regression
    sparsity: float
    calibration_rows: np.ndarray  # float32 (M, F)
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
        datasets: DatasetAccess | None = None,
        samples: TableSamples | None = None,
    ) -> None:
        self._uow = uow
        self._datasets = datasets
        self._samples = samples
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
        validation = self._validation(principal, model, version, request)
        calibration = self._calibration(principal, model, version, request, validation)
        own = request.static and calibration.field != validation.field  # not the validation rows again
        _check_width(version, [validation, calibration] if own else [validation])
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
                    rows=validation.rows,
                    labels=validation.labels,
                    task=task,
                    sparsity=request.sparsity,
                    calibration_rows=calibration.rows,
                    latency_calls=request.latency_calls,
                    out_dir=Path(folder),
                )
            )
            figures: JsonObject = {
                **outcome.report,
                "maxAccuracyDrop": request.max_accuracy_drop,
                "validation": validation.source,
            }
            if request.static:
                figures["calibration"] = calibration.source
            options = request.options(len(calibration.rows))
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
                params={"method": request.method, **options},
                lineage={
                    "optimization": {
                        "method": request.method,
                        "options": options,
                        "sourceModel": model.id,
                        "sourceVersion": version.version,
                        "sourceForm": "onnx" if framework != model.framework else "native",
                        **figures,
                    }
                },
                configuration={**configuration, **outcome.configuration},
            )
            return self._register(principal, target, outcome, metadata)

    def _validation(
        self, principal: Principal, model: Model, version: ModelVersion, request: OptimizationRequest
    ) -> _Rows:
        if request.validation_dataset is None:
            rows = np.asarray(request.validation_rows, dtype=np.float32)
            labels = np.asarray(request.validation_labels)
            return _Rows(rows, labels, {"source": "inline", "rows": len(rows)}, "body.validation.rows")
        return self._sampled(principal, model, version, request.validation_dataset, "validation", True)

    def _calibration(
        self,
        principal: Principal,
        model: Model,
        version: ModelVersion,
        request: OptimizationRequest,
        validation: _Rows,
    ) -> _Rows:
        """Static INT8's calibration rows: ``calibration``'s dataset, ``calibrationRows``, else the
        validation rows."""
        if request.calibration_dataset is not None:
            return self._sampled(principal, model, version, request.calibration_dataset, "calibration", False)
        if request.calibration_rows is not None:
            rows = np.asarray(request.calibration_rows, dtype=np.float32)
            return _Rows(rows, np.empty(0), {"source": "inline", "rows": len(rows)}, "body.calibrationRows")
        return replace(validation, source={**validation.source, "sameAsValidation": True})

    def _sampled(
        self,
        principal: Principal,
        model: Model,
        version: ModelVersion,
        request: DatasetSample,
        where: str,
        labelled: bool,
    ) -> _Rows:
        """A seeded sample of the version's features (and, ``labelled``, the target) of a dataset the
        caller's tenant may read; every problem is a 422 naming ``body.<where>.<field>``."""
        if self._datasets is None or self._samples is None:
            raise InvalidInput(
                "This process reads no datasets: send the rows inline.",
                errors=[FieldError(f"body.{where}.datasetConfig", "datasets are not readable here")],
            )
        features = request.dataset.features or []
        if len(set(features)) != len(features):
            raise _refused(where, [FieldError("datasetConfig.features", "names a column more than once")])
        tenant = principal.tenant_id
        declared = _schema_features(model, version)
        wanted = replace(request.dataset, features=request.dataset.features or declared)
        checked = check_data(self._datasets, tenant, model, wanted)
        dataset = checked.dataset
        # A calibration sample needs no labels: a target it cannot find is no problem.
        errors = [e for e in checked.errors if labelled or e.field != TARGET_FIELD]
        if dataset.format in ("npz", "imagefolder"):
            errors.append(FieldError("datasetConfig.format", "a sample is read from csv or parquet data"))
        if errors:
            raise _refused(where, self._columns_named(tenant, dataset, declared, errors, labelled))
        uri = dict(checked.readable)["trainPath"]
        target = dataset.target if labelled else None  # calibration reads no labels
        features = dataset.features or [
            c for c in self._datasets.columns(uri, dataset.format) if c != dataset.target
        ]
        if not 1 <= request.rows <= MAX_SAMPLE:
            errors.append(FieldError("sample", f"must be 1-{MAX_SAMPLE}"))
        elif request.rows * len(features) > MAX_SAMPLE_VALUES:
            most = MAX_SAMPLE_VALUES // max(len(features), 1)
            errors.append(FieldError("sample", f"{len(features)} features: at most {most} rows"))
        if errors:
            raise _refused(where, errors)
        field_name = f"body.{where}.datasetConfig.trainPath"
        sampled = self._samples.sample(
            uri, dataset.format, features, target, request.rows, SAMPLE_SEED, field_name
        )
        if not len(sampled.rows):
            raise _refused(where, [FieldError("datasetConfig.trainPath", "the dataset has no rows")])
        source: JsonObject = {
            "source": request.dataset.train_path,
            "format": dataset.format,
            "features": list(features),
            "rows": len(sampled.rows),
            "datasetRows": sampled.dataset_rows,
            "sample": request.rows,
            "seed": SAMPLE_SEED,
        }
        if labelled:
            source["target"] = dataset.target
            if dataset.target_chosen_because:
                source["targetChosenBecause"] = dataset.target_chosen_because
        labels = sampled.labels if sampled.labels is not None else np.empty(0)
        return _Rows(sampled.rows, labels, source, f"body.{where}.datasetConfig.features")

    def _columns_named(
        self,
        tenant: str,
        dataset: DatasetConfig,
        declared: list[str] | None,
        errors: list[FieldError],
        labelled: bool,
    ) -> list[FieldError]:
        """``errors``, with a missing target or feature column named on ``target`` or ``features``
        rather than on ``trainPath`` (whose header check reports every problem of the file)."""
        assert self._datasets is not None
        if dataset.format not in SAMPLED_FORMATS:
            return errors
        try:
            uri = self._datasets.resolve(tenant, dataset.train_path, "datasetConfig.trainPath")
        except InvalidInput:
            return errors
        columns = self._datasets.columns(uri, dataset.format)
        if not columns:
            return errors
        named: list[FieldError] = []
        if labelled and dataset.target and dataset.target not in columns:
            named.append(
                FieldError(TARGET_FIELD, f"the dataset has no column {dataset.target!r} ({_shown(columns)})")
            )
        missing = [f for f in dataset.features or [] if f not in columns]
        if missing:
            whose = "the version's" if dataset.features == declared else "the"
            named.append(
                FieldError(
                    "datasetConfig.features",
                    f"the dataset lacks {whose} feature columns {', '.join(map(repr, missing))} "
                    f"({_shown(columns)})",
                )
            )
        if not named:
            return errors
        return [e for e in errors if e.field != "datasetConfig.trainPath"] + named

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


def _schema_features(model: Model, version: ModelVersion) -> list[str] | None:
    """The version's named feature columns (its tabular input schema), in the order it takes them."""
    schema = effective_input_schema(model, version)
    return schema.names if isinstance(schema, TabularSchema) and schema.names else None


def _check_width(version: ModelVersion, samples: list[_Rows]) -> None:
    """Rows as wide as the version's input, where its signature says how wide that is."""
    width = version.signature.n_features if version.signature else None
    errors = [
        FieldError(
            rows.field, f"rows of {rows.rows.shape[1]} values: version {version.version} takes {width}"
        )
        for rows in samples
        if width is not None and rows.rows.ndim == 2 and rows.rows.shape[1] != width
    ]
    if errors:
        raise InvalidInput("The rows do not fit the version's input.", errors=errors)


def _refused(where: str, errors: list[FieldError]) -> InvalidInput:
    named = [FieldError(f"body.{where}.{e.field}", e.message) for e in errors]
    return InvalidInput(
        f"The {where} dataset cannot be used: " + "; ".join(f"{e.field}: {e.message}" for e in named[:5]),
        errors=named,
    )


def _shown(columns: list[str], limit: int = 30) -> str:
    more = f" and {len(columns) - limit} more" if len(columns) > limit else ""
    return "its columns: " + ", ".join(columns[:limit]) + more


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
    inline = bool(rows or request.validation_labels)
    if inline and request.validation_dataset is not None:
        problems.append(FieldError("body.validation", "send rows and labels, or a datasetConfig, not both"))
    elif request.validation_dataset is None:
        if not rows:
            problems.append(FieldError("body.validation.rows", "at least one row"))
        elif len({len(r) for r in rows}) != 1:
            problems.append(FieldError("body.validation.rows", "every row needs the same number of values"))
        if len(request.validation_labels) != len(rows):
            problems.append(FieldError("body.validation.labels", "one label per row"))
    calibration = request.calibration_rows
    if calibration is not None and request.calibration_dataset is not None:
        problems.append(FieldError("body.calibration", "send calibrationRows or calibration, not both"))
    elif calibration is not None and rows and any(len(r) != len(rows[0]) for r in calibration):
        problems.append(FieldError("body.calibrationRows", "rows as wide as the validation rows"))
    if request.calibration_dataset is not None and not request.static:
        problems.append(FieldError("body.calibration", "only static quantization is calibrated"))
    if problems:
        raise InvalidInput("The optimisation request is not valid.", errors=problems)


def _not_applicable(request: OptimizationRequest, model: Model, why: str) -> InvalidInput:
    return InvalidInput(
        f"{request.method} does not apply to this {model.framework} version: {why}.",
        errors=[FieldError("body.method", why)],
        code="method-not-applicable",
    )
