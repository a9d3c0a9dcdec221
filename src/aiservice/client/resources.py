"""The sync client's resources: ``client.models``, ``.versions``, ``.jobs``, ``.deployments``,
``.experiments`` and ``.datasets`` (``aio_resources.py`` has their async twins)."""

from __future__ import annotations

import builtins
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from aiservice.client import _ops as ops
from aiservice.client._core import Reply, problem_of
from aiservice.client._http import Digest
from aiservice.client._progress import Bar
from aiservice.client.jobs import TrainingJob
from aiservice.client.types import (
    Alias,
    Dataset,
    Deployment,
    Experiment,
    ExperimentResults,
    JobState,
    Model,
    Version,
)

if TYPE_CHECKING:
    from aiservice.client.sync import Client

UNSET = ops.UNSET


class _Resource:
    def __init__(self, client: Client) -> None:
        self._client = client


class Models(_Resource):
    def create(
        self,
        name: str,
        framework: str,
        *,
        description: str = "",
        category: str | None = None,
        input_schema: Mapping[str, Any] | None = None,
        output_schema: Mapping[str, Any] | None = None,
        configuration: Mapping[str, Any] | None = None,
        tags: Sequence[str] | None = None,
    ) -> Model:
        call = ops.create_model(
            name, framework, description, category, input_schema, output_schema, configuration, tags
        )
        return self._client._call(call)

    def list(
        self,
        *,
        framework: str | None = None,
        category: str | None = None,
        tag: str | None = None,
        q: str | None = None,
        sort: str | None = None,
        page_size: int = ops.PAGE_SIZE,
    ) -> Iterator[Model]:
        pager = ops.list_models(
            framework=framework, category=category, tag=tag, q=q, sort=sort, limit=page_size
        )
        return self._client._iterate(pager, Model.from_json)

    def get(self, model: str) -> Model:
        return self._client._call(ops.get_model(model))

    def update(
        self,
        model: str,
        *,
        description: str = UNSET,
        category: str | None = UNSET,
        input_schema: Mapping[str, Any] = UNSET,
        output_schema: Mapping[str, Any] = UNSET,
        configuration: Mapping[str, Any] = UNSET,
        tags: Sequence[str] = UNSET,
    ) -> Model:
        """Change what is given; ``category=None`` clears the category."""
        changes = ops._set(
            description=description,
            category=category,
            input_schema=input_schema,
            output_schema=output_schema,
            configuration=configuration,
            tags=tags,
        )
        return self._client._call(ops.update_model(model, changes))

    def delete(self, model: str) -> None:
        self._client._call(ops.delete_model(model))

    def upload_version(
        self,
        model: str,
        artifact: Any,
        *,
        framework: str | None = None,
        filename: str | None = None,
        description: str = "",
        metrics: Mapping[str, float] | None = None,
        params: Mapping[str, Any] | None = None,
        source_run: str | None = None,
        example_input: Any = None,
        progress: bool = False,
    ) -> Version:
        """Upload a file (a path), raw bytes (with ``filename``), or a live sklearn, XGBoost, LightGBM,
        PyTorch or Keras model, saved in the safe format the service loads; ``progress`` draws a bar."""
        metadata = {"description": description, "metrics": metrics, "params": params, "sourceRun": source_run}
        upload = ops.version_upload(
            artifact,
            framework=framework,
            filename=filename,
            example_input=example_input,
            metadata={k: v for k, v in metadata.items() if v},
        )
        with Bar(upload.file_size, f"Uploading {upload.filename}", enabled=progress, bytes_=True) as bar:
            return self._client._call(ops.upload_version(model, upload), bar)


class Versions(_Resource):
    def list(self, model: str, *, page_size: int = ops.PAGE_SIZE) -> Iterator[Version]:
        return self._client._iterate(ops.list_versions(model, page_size), Version.from_json)

    def get(self, model: str, version: int) -> Version:
        return self._client._call(ops.get_version(model, version))

    def download(self, model: str, version: int, path: str | Path | None = None) -> bytes | Path:
        """The artifact's bytes, or written to ``path`` (returned); checked against its SHA-256."""
        client = self._client
        with client._http.stream("GET", ops.artifact_path(model, version)) as response:
            if response.status_code >= 400:
                raise problem_of(Reply(response.status_code, response.headers, response.read()))
            digest = Digest(response.headers.get("etag"))
            if path is None:
                data = response.read()
                digest.update(data)
                digest.verify()
                return data
            target = Path(path)
            with target.open("wb") as handle:
                for chunk in response.iter_bytes():
                    digest.update(chunk)
                    handle.write(chunk)
            digest.verify()
            return target

    def promote(
        self,
        model: str,
        version: int,
        *,
        stage: str | None = None,
        alias: str | None = None,
        archive_existing: bool = False,
    ) -> Version:
        """Move a version to a ``stage`` (staging, production, archived, none) and/or point an ``alias``
        at it; returns the version as it is now."""
        if stage is None and alias is None:
            raise ValueError("name a stage, an alias, or both")
        if alias is not None:
            self._client._call(ops.set_alias(model, alias, version))
        if stage is None:
            return self.get(model, version)
        return self._client._call(ops.set_stage(model, version, stage, archive_existing))

    def aliases(self, model: str) -> builtins.list[Alias]:
        return self._client._call(ops.list_aliases(model))

    def delete_alias(self, model: str, alias: str) -> None:
        self._client._call(ops.delete_alias(model, alias))


class Jobs(_Resource):
    def list(
        self, *, model: str | None = None, status: str | None = None, page_size: int = ops.PAGE_SIZE
    ) -> Iterator[TrainingJob]:
        pager = ops.list_jobs(model, status, page_size)
        return self._client._iterate(pager, lambda item: TrainingJob(self._client, JobState.from_json(item)))

    def get(self, job: str) -> TrainingJob:
        return TrainingJob(self._client, self._client._call(ops.get_job(job)))

    def cancel(self, job: str) -> TrainingJob:
        """Cancels a queued or running job by id, without reading it first."""
        return TrainingJob(self._client, self._client._call(ops.cancel_job(job)))


class Deployments(_Resource):
    def create(
        self,
        model: str,
        name: str,
        *,
        version: int | None = None,
        alias: str | None = None,
        environment: str | None = None,
        target: str | None = None,
        min_replicas: int | None = None,
        max_replicas: int | None = None,
        resource_limits: Mapping[str, Any] | None = None,
        autoscaling: Mapping[str, Any] | None = None,
    ) -> Deployment:
        body = ops.deployment_body(
            name,
            {
                "version": version,
                "alias": alias,
                "environment": environment,
                "target": target,
                "min_replicas": min_replicas,
                "max_replicas": max_replicas,
                "resource_limits": resource_limits,
                "autoscaling": autoscaling,
            },
        )
        return self._client._call(ops.deploy(model, body))

    def list(
        self,
        *,
        model: str | None = None,
        status: str | None = None,
        environment: str | None = None,
        page_size: int = ops.PAGE_SIZE,
    ) -> Iterator[Deployment]:
        pager = ops.list_deployments(model=model, status=status, environment=environment, limit=page_size)
        return self._client._iterate(pager, Deployment.from_json)

    def get(self, name: str) -> Deployment:
        return self._client._call(ops.get_deployment(name))

    def update(
        self,
        name: str,
        *,
        version: int | None = None,
        alias: str | None = None,
        min_replicas: int | None = None,
        max_replicas: int | None = None,
        autoscaling: Mapping[str, Any] | None = None,
    ) -> Deployment:
        changes = {
            "version": version,
            "alias": alias,
            "min_replicas": min_replicas,
            "max_replicas": max_replicas,
            "autoscaling": autoscaling,
        }
        return self._client._call(ops.update_deployment(name, changes))

    def rollback(self, name: str) -> Deployment:
        return self._client._call(ops.rollback_deployment(name))

    def delete(self, name: str) -> None:
        self._client._call(ops.delete_deployment(name))


class Experiments(_Resource):
    def create(self, name: str, model: str, arms: Sequence[Mapping[str, Any]], **options: Any) -> Experiment:
        """A draft experiment; ``options``: mode, deployment, champion, routing_key, confidence,
        min_detectable_effect, auto_promote, canary, bandit."""
        return self._client._call(ops.create_experiment(name, model, arms, options))

    def list(
        self,
        *,
        model: str | None = None,
        status: str | None = None,
        mode: str | None = None,
        page_size: int = ops.PAGE_SIZE,
    ) -> Iterator[Experiment]:
        return self._client._iterate(
            ops.list_experiments(model=model, status=status, mode=mode, limit=page_size), Experiment.from_json
        )

    def get(self, experiment: str) -> Experiment:
        return self._client._call(ops.get_experiment(experiment))

    def start(self, experiment: str) -> Experiment:
        return self._client._call(ops.experiment_action(experiment, "start"))

    def pause(self, experiment: str) -> Experiment:
        return self._client._call(ops.experiment_action(experiment, "pause"))

    def resume(self, experiment: str) -> Experiment:
        return self._client._call(ops.experiment_action(experiment, "resume"))

    def stop(self, experiment: str) -> Experiment:
        return self._client._call(ops.experiment_action(experiment, "stop"))

    def promote(self, experiment: str, arm: str | None = None) -> Experiment:
        return self._client._call(ops.experiment_action(experiment, "promote", {"arm": arm}))

    def results(self, experiment: str) -> ExperimentResults:
        return self._client._call(ops.experiment_results(experiment))

    def delete(self, experiment: str) -> None:
        self._client._call(ops.delete_experiment(experiment))


class Datasets(_Resource):
    def upload(self, path: str | Path, *, name: str | None = None, format: str | None = None) -> Dataset:
        return self._client._call(ops.upload_dataset(path, name, format))

    def list(self, *, page_size: int = ops.PAGE_SIZE) -> Iterator[Dataset]:
        return self._client._iterate(ops.list_datasets(page_size), Dataset.from_json)

    def get(self, name: str) -> Dataset:
        return self._client._call(ops.get_dataset(name))

    def delete(self, name: str) -> None:
        self._client._call(ops.delete_dataset(name))
