"""Reference rows for a version's profile, and the version's own predictions on them.

Predictions go through the inference service (the same input checks and label mapping as live
traffic), but are neither routed by an experiment nor written to the payload log, since they are not
traffic.

Rows come from the request (``rows``) or from a dataset the tenant uploaded (``datasetId``):
``ReferenceDatasets`` reads the version's feature columns (its input schema's names; for a version
without named features, every column but the label ``training_data.choose_target`` picks) of a seeded
uniform sample of at most ``sample`` rows (every row, in file order, when the dataset holds fewer).
The sample is drawn while the file is read batch by batch (``DatasetSamples``), so memory is bounded
by the sample, not by the dataset.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal, Protocol

from aiservice.application.inference import InferenceService
from aiservice.application.monitoring.ports import MonitoringUnitOfWorkFactory
from aiservice.application.registry import find_model
from aiservice.application.serving.results import PredictionResult, PredictOptions
from aiservice.application.serving.routing import effective_input_schema
from aiservice.application.training_data import choose_target
from aiservice.domain.errors import DomainError, FieldError, InvalidInput, NotFound
from aiservice.domain.models import Model
from aiservice.domain.schemas import Feature, TabularSchema
from aiservice.domain.tenancy import Permission, Principal

CHUNK = 1000  # rows per model call
MAX_SAMPLE = 10_000  # rows a dataset's sample holds at most (and by default)
SAMPLE_SEED = 0  # one dataset gives one sample: a profile set twice from it is the same profile
DATASET_FIELD = "body.datasetId"
SAMPLED_FORMATS = ("csv", "parquet")

ColumnKind = Literal["number", "text", "boolean"]


@dataclass(frozen=True)
class DatasetHeader:
    format: str
    columns: list[str]  # empty when the header cannot be read or the file has no rows


class DatasetSamples(Protocol):
    """Rows of the datasets a tenant uploaded, read without loading more than the sample."""

    def header(self, tenant_id: str, name: str) -> DatasetHeader | None:
        """The dataset's format and column names; None when the tenant has no dataset of that name."""
        ...

    def sample(
        self, tenant_id: str, name: str, columns: Mapping[str, ColumnKind], rows: int, seed: int, field: str
    ) -> list[dict[str, Any]]:
        """At most ``rows`` rows of ``columns`` (each read as its kind; a missing value is None), a
        uniform sample seeded by ``seed`` (every row when there are fewer), in file order.
        ``InvalidInput`` naming ``field`` when the data cannot be read as asked."""
        ...


@dataclass(frozen=True)
class DatasetRows:
    model: Model
    rows: list[Any]  # as the version's predict takes them
    source: str  # the profile's source: ``dataset:<name>``


class ReferenceDatasets:
    """Reference rows from an uploaded dataset (permission ``model:write``, like setting a profile)."""

    def __init__(
        self, uow: MonitoringUnitOfWorkFactory, samples: DatasetSamples, *, max_sample: int = MAX_SAMPLE
    ) -> None:
        self._uow = uow
        self._samples = samples
        self.max_sample = max_sample

    def rows(
        self, principal: Principal, model_ident: str, version: int, dataset: str, sample: int | None = None
    ) -> DatasetRows:
        """The sample's feature rows. ``InvalidInput`` naming ``body.datasetId`` for a dataset that
        is not there, not csv or parquet, or lacks the version's features (listed); ``NotFound`` for an
        unknown model or version. Reads files: call it off the event loop."""
        principal.require(Permission.MODEL_WRITE)
        size = self.max_sample if sample is None else sample
        if not 1 <= size <= self.max_sample:
            message = f"must be 1-{self.max_sample}"
            raise InvalidInput(f"body.sample {message}", errors=[FieldError("body.sample", message)])
        with self._uow(principal.tenant_id, writes=False) as uow:
            model = find_model(uow, model_ident, principal)
            found = uow.versions.get(model.id, version)
        if found is None:
            raise NotFound(
                f"Model {model.name!r} has no version {version}.",
                extra={"model": model.name, "version": version},
            )
        header = self._header(principal.tenant_id, dataset)
        schema = effective_input_schema(model, found)
        if isinstance(schema, TabularSchema):
            missing = [name for name in schema.names if name not in header.columns]
            if missing:
                message = (
                    f"dataset {dataset!r} lacks the version's feature columns {', '.join(missing)} "
                    f"(its columns: {_shown(header.columns)})"
                )
                raise InvalidInput(
                    f"{DATASET_FIELD}: {message}",
                    errors=[FieldError(DATASET_FIELD, message)],
                    extra={"missingColumns": missing},
                )
            kinds = {feature.name: _kind(feature) for feature in schema.features}
            rows: list[Any] = self._sample(principal.tenant_id, dataset, kinds, size)
        elif schema is None:  # unnamed features: every column but the label, in file order
            features = self._unnamed_features(model, dataset, header.columns)
            sampled = self._sample(principal.tenant_id, dataset, dict.fromkeys(features, "number"), size)
            rows = [{"features": [row[name] for name in features]} for row in sampled]
        else:
            message = f"a dataset gives tabular rows; this version takes {schema.kind} inputs: send rows"
            raise InvalidInput(f"{DATASET_FIELD}: {message}", errors=[FieldError(DATASET_FIELD, message)])
        return DatasetRows(model, rows, f"dataset:{dataset}")

    def _header(self, tenant_id: str, dataset: str) -> DatasetHeader:
        header = self._samples.header(tenant_id, dataset)
        if header is None:
            problem = f"there is no uploaded dataset named {dataset!r}"
        elif header.format not in SAMPLED_FORMATS:
            problem = f"dataset {dataset!r} is {header.format}: a reference profile reads csv or parquet"
        elif not header.columns:
            problem = f"dataset {dataset!r} has no rows, or its header cannot be read"
        else:
            return header
        raise InvalidInput(f"{DATASET_FIELD}: {problem}", errors=[FieldError(DATASET_FIELD, problem)])

    def _unnamed_features(self, model: Model, dataset: str, columns: list[str]) -> list[str]:
        choice = choose_target(columns, model, None)
        if isinstance(choice, FieldError):
            message = f"the version names no features, so its label column must be found: {choice.message}"
            raise InvalidInput(f"{DATASET_FIELD}: {message}", errors=[FieldError(DATASET_FIELD, message)])
        return [column for column in columns if column != choice.column]

    def _sample(
        self, tenant_id: str, dataset: str, kinds: Mapping[str, ColumnKind], size: int
    ) -> list[dict[str, Any]]:
        rows = self._samples.sample(tenant_id, dataset, kinds, size, SAMPLE_SEED, DATASET_FIELD)
        if not rows:
            message = f"dataset {dataset!r} has no rows"
            raise InvalidInput(f"{DATASET_FIELD}: {message}", errors=[FieldError(DATASET_FIELD, message)])
        return rows


def _kind(feature: Feature) -> ColumnKind:
    """How a feature's column is read: as the values the schema checks it against."""
    if feature.type == "string":
        return "text"
    if feature.type == "boolean":
        return "boolean"
    if feature.type == "category":
        values = feature.values or ()
        if values and all(isinstance(v, bool) for v in values):
            return "boolean"
        return "text" if any(isinstance(v, str) for v in values) else "number"
    return "number"


def _shown(columns: list[str], limit: int = 30) -> str:
    more = f" and {len(columns) - limit} more" if len(columns) > limit else ""
    return ", ".join(columns[:limit]) + more


async def reference_predictions(
    inference: InferenceService,
    principal: Principal,
    model: str,
    version: int,
    rows: Sequence[Any],
    where: str = "body.rows",
) -> list[Any]:
    """One prediction (label or value) per row; ``InvalidInput`` naming the rows the model refused
    (``body.rows.<i>``; for a dataset's sample, ``where`` itself with the sample's row in the message)."""
    results = await inference.predict_many(
        principal,
        model,
        list(rows),
        PredictOptions(version=version),
        where=where if where == "body.rows" else "sample",
        chunk=CHUNK,
        observe=False,
    )
    refused = [i for i, r in enumerate(results) if isinstance(r, DomainError)]
    if refused:
        errors = [
            FieldError(f"{where}.{i}", _reason(results[i]))
            if where == "body.rows"
            else FieldError(where, f"row {i} of the sample: {_reason(results[i])}")
            for i in refused[:20]
        ]
        raise InvalidInput(f"The version could not predict {len(refused)} reference rows.", errors=errors)
    return [r.prediction for r in results if isinstance(r, PredictionResult)]


def _reason(result: PredictionResult | DomainError) -> str:
    return result.detail if isinstance(result, DomainError) else "refused"
