"""A training request's datasets, checked at submission: every path resolved, the format told from a
folder's files when the request names none, the target column chosen when it names none, and each
path's header read.

The target, when ``datasetConfig.target`` is absent (csv and parquet), is chosen from the training
data's columns, leaving out the features (the request's ``features``, else the model's tabular
``inputSchema`` features), by the first rule that names exactly one column:

1. the model's ``outputSchema.target`` (else ``outputSchema.name``), when the data has that column;
2. the one column named ``label``, ``target``, ``class`` or ``y`` (in any case);
3. the one column left when the features are taken out.

Otherwise the request is refused on ``datasetConfig.target``, listing the columns. The job records the
column (``target``) and the rule (``targetChosenBecause``), as it records a chosen algorithm.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any, Protocol

from aiservice.domain.errors import FieldError, InvalidInput
from aiservice.domain.models import Model
from aiservice.domain.training import DATASET_FORMATS, DatasetConfig, TargetValues

TARGET_FIELD = "datasetConfig.target"
TARGET_NAMES = ("label", "target", "class", "y")
_TABULAR = ("csv", "parquet")
_SHOWN = 30  # columns a refusal lists
_NEEDS_TARGET = ": a target column is needed"  # the readers' complaint when no target is given


class DatasetAccess(Protocol):
    def resolve(self, tenant_id: str, reference: str, field: str) -> str:
        """A readable URI for a user's reference (file or folder), or ``InvalidInput`` naming ``field``."""
        ...

    def folder_format(self, uri: str, field: str) -> str | None:
        """The format of a folder's files (csv, parquet, imagefolder); None when ``uri`` is a file.
        ``InvalidInput`` naming ``field`` when the folder holds no data, or both csv and parquet files."""
        ...

    def columns(self, uri: str, format: str) -> list[str]:
        """A csv or parquet dataset's column names (a folder's: its first file with rows); empty when they
        cannot be read (``problems`` says why)."""
        ...

    def problems(self, uri: str, config: DatasetConfig) -> list[str]:
        """What stops the dataset being used, found from its header alone."""
        ...

    def target_values(self, uri: str, config: DatasetConfig, field: str) -> TargetValues:
        """The distinct target values (of the first rows only, for a large file), or ``InvalidInput``
        naming ``field`` when they cannot be read."""
        ...


@dataclass(frozen=True)
class CheckedData:
    dataset: DatasetConfig  # with the format and target filled in where they could be
    readable: list[tuple[str, str]]  # (request field, URI) of each path whose header reads
    errors: list[FieldError]


@dataclass(frozen=True)
class TargetChoice:
    column: str
    because: str


def check_data(datasets: DatasetAccess, tenant_id: str, model: Model, dataset: DatasetConfig) -> CheckedData:
    """Every problem of the request's datasets, at once; the config completed as far as it could be."""
    errors: list[FieldError] = []
    uris: dict[str, str] = {}
    for name, reference in dataset.paths():
        try:
            uris[name] = datasets.resolve(tenant_id, reference, f"datasetConfig.{name}")
        except InvalidInput as exc:
            errors += _field_errors(exc, f"datasetConfig.{name}")
    train = uris.get("trainPath")
    told = True
    if not dataset.format and train is not None:
        try:
            dataset = replace(dataset, format=datasets.folder_format(train, "datasetConfig.trainPath") or "")
        except InvalidInput as exc:
            errors += _field_errors(exc, "datasetConfig.trainPath")
            told = False  # that error says why; asking for the format too would say it twice
    if not dataset.format and told:
        errors.append(
            FieldError(
                "datasetConfig.format",
                f"name the format ({', '.join(DATASET_FORMATS)}): trainPath's extension does not say it",
            )
        )
    elif dataset.format and dataset.format not in DATASET_FORMATS:
        errors.append(FieldError("datasetConfig.format", f"must be one of {', '.join(DATASET_FORMATS)}"))
    if dataset.format in _TABULAR and not dataset.target and train is not None:
        columns = datasets.columns(train, dataset.format)
        if columns:  # unreadable: the header check below says why
            choice = choose_target(columns, model, dataset.features)
            if isinstance(choice, FieldError):
                errors.append(choice)
            else:
                dataset = replace(dataset, target=choice.column, target_chosen_because=choice.because)
    readable: list[tuple[str, str]] = []
    if dataset.format in DATASET_FORMATS:
        for name, uri in uris.items():
            # The target's own error (above) says what "a target column is needed" would say again.
            problems = [p for p in datasets.problems(uri, dataset) if not p.endswith(_NEEDS_TARGET)]
            errors += [FieldError(f"datasetConfig.{name}", problem) for problem in problems]
            if not problems:
                readable.append((name, uri))
    return CheckedData(dataset, readable, errors)


def choose_target(
    columns: Sequence[str], model: Model, features: Sequence[str] | None
) -> TargetChoice | FieldError:
    """The target column for a request that names none (the rules of this module's docstring), or the
    ``FieldError`` that asks for it."""
    declared = set(features) if features else set(_schema_features(model.input_schema))
    candidates = [column for column in columns if column not in declared]
    for key in ("target", "name"):
        named = model.output_schema.get(key)
        if isinstance(named, str) and named in candidates:
            return TargetChoice(
                named,
                f"the request named no target: the model's outputSchema.{key} names the column {named!r}",
            )
    conventional = [column for column in candidates if column.lower() in TARGET_NAMES]
    if len(conventional) == 1:
        return TargetChoice(
            conventional[0],
            f"the request named no target: {conventional[0]!r} is the one column named "
            f"{', '.join(TARGET_NAMES[:-1])} or {TARGET_NAMES[-1]}",
        )
    if not conventional and declared and len(candidates) == 1:
        where = "the request's features" if features else "the model's inputSchema"
        return TargetChoice(
            candidates[0],
            f"the request named no target: {candidates[0]!r} is the one column that {where} does not "
            "name as a feature",
        )
    return FieldError(TARGET_FIELD, _ask_for_target(columns, conventional))


def _ask_for_target(columns: Sequence[str], conventional: list[str]) -> str:
    shown = ", ".join(columns[:_SHOWN]) + (
        f" and {len(columns) - _SHOWN} more" if len(columns) > _SHOWN else ""
    )
    if len(conventional) > 1:
        why = f"{' and '.join(map(repr, conventional))} could each be the label"
    else:
        why = f"no column is named {', '.join(TARGET_NAMES[:-1])} or {TARGET_NAMES[-1]}"
    return f"name the label column: the request names none and {why}; the training data's columns: {shown}"


def _schema_features(input_schema: Any) -> list[str]:
    """A tabular model's declared feature names (the columns it is fed when serving)."""
    if not isinstance(input_schema, dict) or input_schema.get("type") != "tabular":
        return []
    found = input_schema.get("features")
    features = found if isinstance(found, list) else []
    return [
        feature["name"]
        for feature in features
        if isinstance(feature, dict) and isinstance(feature.get("name"), str)
    ]


def _field_errors(exc: InvalidInput, field: str) -> list[FieldError]:
    return list(exc.errors) if exc.errors else [FieldError(field, exc.detail)]
