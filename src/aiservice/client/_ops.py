"""Every call of the API the SDK makes, as a ``Call`` (method, path, body, how to read the answer): built
once here, sent by the sync and the async client alike."""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

from aiservice.client._core import Call, Reply, Upload, api, nothing, paged
from aiservice.client.artifacts import serialise
from aiservice.client.types import (
    Alias,
    Dataset,
    Deployment,
    Experiment,
    ExperimentResults,
    JobState,
    Model,
    Page,
    Version,
)

T = TypeVar("T")
UNSET: Any = object()  # "leave unchanged" for updates where None means "clear"
PAGE_SIZE = 100


def _one(kind: Callable[[Mapping[str, Any]], T]) -> Callable[[Reply], T]:
    return lambda reply: kind(reply.json())


def _set(**values: Any) -> dict[str, Any]:
    return {k: v for k, v in values.items() if v is not UNSET}


# Models


def create_model(
    name: str,
    framework: str,
    description: str,
    category: str | None,
    input_schema: Mapping[str, Any] | None,
    output_schema: Mapping[str, Any] | None,
    configuration: Mapping[str, Any] | None,
    tags: Sequence[str] | None,
) -> Call[Model]:
    body: dict[str, Any] = {"name": name, "framework": framework, "description": description}
    extra = {
        "category": category,
        "inputSchema": input_schema,
        "outputSchema": output_schema,
        "configuration": configuration,
        "tags": list(tags) if tags is not None else None,
    }
    body.update({k: v for k, v in extra.items() if v is not None})
    return Call("POST", api("models"), _one(Model.from_json), json=body)


def list_models(**filters: Any) -> Callable[[str | None], Call[Page]]:
    return paged("GET", api("models"), {"limit": PAGE_SIZE, **filters})


def get_model(model: str) -> Call[Model]:
    return Call("GET", api("models", model), _one(Model.from_json))


def update_model(model: str, changes: Mapping[str, Any]) -> Call[Model]:
    names = {"input_schema": "inputSchema", "output_schema": "outputSchema"}
    body = {names.get(k, k): v for k, v in changes.items() if v is not UNSET}
    return Call("PATCH", api("models", model), _one(Model.from_json), json=body)


def delete_model(model: str) -> Call[None]:
    return Call("DELETE", api("models", model), nothing)


def version_upload(
    artifact: Any,
    *,
    framework: str | None,
    filename: str | None,
    example_input: Any,
    metadata: Mapping[str, Any],
) -> Upload:
    """The multipart body of a version: a file path, raw bytes, or a live model serialised safely."""
    if isinstance(artifact, str | Path):
        path = Path(artifact)
        source: bytes | Path = path
        name = filename or path.name
    elif isinstance(artifact, bytes | bytearray | memoryview):
        if not filename:
            raise ValueError("name the artifact's file (filename='model.skops') when uploading bytes")
        source, name = bytes(artifact), filename
    else:
        name, source = serialise(artifact, framework, example_input)
        name = filename or name
    fields = {"metadata": json.dumps(dict(metadata))} if metadata else {}
    return Upload(filename=name, source=source, fields=fields)


def upload_version(model: str, upload: Upload) -> Call[Version]:
    return Call("POST", api("models", model, "versions"), _one(Version.from_json), upload=upload)


# Versions and aliases


def list_versions(model: str, limit: int = PAGE_SIZE) -> Callable[[str | None], Call[Page]]:
    return paged("GET", api("models", model, "versions"), {"limit": limit})


def get_version(model: str, version: int) -> Call[Version]:
    return Call("GET", api("models", model, "versions", version), _one(Version.from_json))


def artifact_path(model: str, version: int) -> str:
    return api("models", model, "versions", version, "artifact")


def set_stage(model: str, version: int, stage: str, archive_existing: bool) -> Call[Version]:
    body = {"stage": stage, "archiveExisting": archive_existing}
    return Call(
        "POST", api("models", model, "versions", version, "stage"), _one(Version.from_json), json=body
    )


def set_alias(model: str, alias: str, version: int) -> Call[Alias]:
    return Call(
        "PUT", api("models", model, "aliases", alias), _one(Alias.from_json), json={"version": version}
    )


def delete_alias(model: str, alias: str) -> Call[None]:
    return Call("DELETE", api("models", model, "aliases", alias), nothing)


def list_aliases(model: str) -> Call[list[Alias]]:
    return Call("GET", api("models", model, "aliases"), lambda r: [Alias.from_json(a) for a in r.json()])


# Training


def train(model: str, body: Mapping[str, Any]) -> Call[JobState]:
    return Call("POST", api("models", model, "train"), _one(JobState.from_json), json=dict(body))


def training_body(
    dataset: Any,
    target: str | None,
    algorithm: str | None,
    params: Mapping[str, Any] | None,
    features: Sequence[str] | None,
    data_format: str | None,
    validation_split: float | None,
    resources: Mapping[str, Any] | None,
    training: Mapping[str, Any],
) -> dict[str, Any]:
    """The ``train`` body; ``dataset`` is a path or URI the service reads, or an uploaded ``Dataset``."""
    path = dataset.uri if isinstance(dataset, Dataset) else str(dataset)
    if isinstance(dataset, Dataset) and data_format is None:
        data_format = dataset.format  # a dataset:// URI has no extension to tell it by
    data = {
        "trainPath": path,
        "target": target,
        "features": list(features) if features else None,
        "format": data_format,
        "validationSplit": validation_split,
    }
    config = {"algorithm": algorithm, "params": dict(params) if params else None}
    config.update({_camel(k): v for k, v in training.items()})
    body: dict[str, Any] = {
        "trainingConfig": {k: v for k, v in config.items() if v is not None},
        "datasetConfig": {k: v for k, v in data.items() if v is not None},
    }
    if resources:
        body["resourceConfig"] = {_camel(k): v for k, v in resources.items()}
    return body


def _camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(part.title() for part in rest)


def get_job(job: str) -> Call[JobState]:
    return Call("GET", api("training-jobs", job), _one(JobState.from_json))


def cancel_job(job: str) -> Call[JobState]:
    return Call("POST", api("training-jobs", job, "cancel"), _one(JobState.from_json))


def list_jobs(
    model: str | None,
    status: str | None,
    limit: int = PAGE_SIZE,
    kind: str | None = None,
    automl_study: str | None = None,
) -> Callable[[str | None], Call[Page]]:
    query = {"limit": limit, "modelId": model, "status": status, "kind": kind, "automlStudy": automl_study}
    return paged("GET", api("training-jobs"), query)


def job_events_path(job: str) -> str:
    return api("training-jobs", job, "events")


# Deployments


def deploy(model: str, body: Mapping[str, Any]) -> Call[Deployment]:
    return Call("POST", api("models", model, "deploy"), _one(Deployment.from_json), json=dict(body))


def deployment_body(name: str, options: Mapping[str, Any]) -> dict[str, Any]:
    return {"deploymentName": name, **{_camel(k): v for k, v in options.items() if v is not None}}


def list_deployments(**filters: Any) -> Callable[[str | None], Call[Page]]:
    return paged("GET", api("deployments"), {"limit": PAGE_SIZE, **filters})


def get_deployment(name: str) -> Call[Deployment]:
    return Call("GET", api("deployments", name), _one(Deployment.from_json))


def update_deployment(name: str, changes: Mapping[str, Any]) -> Call[Deployment]:
    body = {_camel(k): v for k, v in changes.items() if v is not None}
    return Call("PATCH", api("deployments", name), _one(Deployment.from_json), json=body)


def rollback_deployment(name: str) -> Call[Deployment]:
    return Call("POST", api("deployments", name, "rollback"), _one(Deployment.from_json))


def delete_deployment(name: str) -> Call[None]:
    return Call("DELETE", api("deployments", name), nothing)


# Experiments


def create_experiment(
    name: str, model: str, arms: Sequence[Mapping[str, Any]], options: Mapping[str, Any]
) -> Call[Experiment]:
    body = {"name": name, "model": model, "arms": [dict(a) for a in arms]}
    body.update({_camel(k): v for k, v in options.items() if v is not None})
    return Call("POST", api("experiments"), _one(Experiment.from_json), json=body)


def list_experiments(**filters: Any) -> Callable[[str | None], Call[Page]]:
    return paged("GET", api("experiments"), {"limit": PAGE_SIZE, **filters})


def get_experiment(experiment: str) -> Call[Experiment]:
    return Call("GET", api("experiments", experiment), _one(Experiment.from_json))


def experiment_action(
    experiment: str, action: str, body: Mapping[str, Any] | None = None
) -> Call[Experiment]:
    """``start``, ``pause``, ``resume``, ``stop`` or ``promote``."""
    return Call("POST", api("experiments", experiment, action), _one(Experiment.from_json), json=body)


def delete_experiment(experiment: str) -> Call[None]:
    return Call("DELETE", api("experiments", experiment), nothing)


def experiment_results(experiment: str) -> Call[ExperimentResults]:
    return Call("GET", api("experiments", experiment, "results"), _one(ExperimentResults.from_json))


# Datasets


def upload_dataset(path: str | Path, name: str | None, data_format: str | None) -> Call[Dataset]:
    fields = {k: v for k, v in (("name", name), ("format", data_format)) if v}
    source = Path(path)
    upload = Upload(filename=source.name, source=source, fields=fields)
    return Call("POST", api("datasets"), _one(Dataset.from_json), upload=upload)


def list_datasets(limit: int = PAGE_SIZE) -> Callable[[str | None], Call[Page]]:
    return paged("GET", api("datasets"), {"limit": limit})


def get_dataset(name: str) -> Call[Dataset]:
    return Call("GET", api("datasets", name), _one(Dataset.from_json))


def delete_dataset(name: str) -> Call[None]:
    return Call("DELETE", api("datasets", name), nothing)
