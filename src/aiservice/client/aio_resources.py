"""The async client's resources: the same as ``resources.py``, awaited (listings are async iterators)."""

from __future__ import annotations

import builtins
from collections.abc import AsyncIterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from aiservice.client import _ops as ops
from aiservice.client._core import Reply, problem_of
from aiservice.client._http import Digest
from aiservice.client._progress import Bar
from aiservice.client.jobs import AsyncTrainingJob
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
    from aiservice.client.aio import AsyncClient

UNSET = ops.UNSET


class _AsyncResource:
    def __init__(self, client: AsyncClient) -> None:
        self._client = client


class AsyncModels(_AsyncResource):
    async def create(
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
        return await self._client._call(call)

    def list(
        self,
        *,
        framework: str | None = None,
        category: str | None = None,
        tag: str | None = None,
        q: str | None = None,
        sort: str | None = None,
        page_size: int = ops.PAGE_SIZE,
    ) -> AsyncIterator[Model]:
        pager = ops.list_models(
            framework=framework, category=category, tag=tag, q=q, sort=sort, limit=page_size
        )
        return self._client._iterate(pager, Model.from_json)

    async def get(self, model: str) -> Model:
        return await self._client._call(ops.get_model(model))

    async def update(
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
        changes = ops._set(
            description=description,
            category=category,
            input_schema=input_schema,
            output_schema=output_schema,
            configuration=configuration,
            tags=tags,
        )
        return await self._client._call(ops.update_model(model, changes))

    async def delete(self, model: str) -> None:
        await self._client._call(ops.delete_model(model))

    async def upload_version(
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
        metadata = {"description": description, "metrics": metrics, "params": params, "sourceRun": source_run}
        upload = ops.version_upload(
            artifact,
            framework=framework,
            filename=filename,
            example_input=example_input,
            metadata={k: v for k, v in metadata.items() if v},
        )
        with Bar(upload.file_size, f"Uploading {upload.filename}", enabled=progress, bytes_=True) as bar:
            return await self._client._call(ops.upload_version(model, upload), bar)


class AsyncVersions(_AsyncResource):
    def list(self, model: str, *, page_size: int = ops.PAGE_SIZE) -> AsyncIterator[Version]:
        return self._client._iterate(ops.list_versions(model, page_size), Version.from_json)

    async def get(self, model: str, version: int) -> Version:
        return await self._client._call(ops.get_version(model, version))

    async def download(self, model: str, version: int, path: str | Path | None = None) -> bytes | Path:
        client = self._client
        async with client._http.stream("GET", ops.artifact_path(model, version)) as response:
            if response.status_code >= 400:
                raise problem_of(Reply(response.status_code, response.headers, await response.aread()))
            digest = Digest(response.headers.get("etag"))
            if path is None:
                data = await response.aread()
                digest.update(data)
                digest.verify()
                return data
            target = Path(path)
            with target.open("wb") as handle:
                async for chunk in response.aiter_bytes():
                    digest.update(chunk)
                    handle.write(chunk)
            digest.verify()
            return target

    async def promote(
        self,
        model: str,
        version: int,
        *,
        stage: str | None = None,
        alias: str | None = None,
        archive_existing: bool = False,
    ) -> Version:
        if stage is None and alias is None:
            raise ValueError("name a stage, an alias, or both")
        if alias is not None:
            await self._client._call(ops.set_alias(model, alias, version))
        if stage is None:
            return await self.get(model, version)
        return await self._client._call(ops.set_stage(model, version, stage, archive_existing))

    async def aliases(self, model: str) -> builtins.list[Alias]:
        return await self._client._call(ops.list_aliases(model))

    async def delete_alias(self, model: str, alias: str) -> None:
        await self._client._call(ops.delete_alias(model, alias))


class AsyncJobs(_AsyncResource):
    def list(
        self, *, model: str | None = None, status: str | None = None, page_size: int = ops.PAGE_SIZE
    ) -> AsyncIterator[AsyncTrainingJob]:
        pager = ops.list_jobs(model, status, page_size)
        client = self._client
        return client._iterate(pager, lambda item: AsyncTrainingJob(client, JobState.from_json(item)))

    async def get(self, job: str) -> AsyncTrainingJob:
        return AsyncTrainingJob(self._client, await self._client._call(ops.get_job(job)))

    async def cancel(self, job: str) -> AsyncTrainingJob:
        """Cancels a queued or running job by id, without reading it first."""
        return AsyncTrainingJob(self._client, await self._client._call(ops.cancel_job(job)))


class AsyncDeployments(_AsyncResource):
    async def create(
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
        return await self._client._call(ops.deploy(model, body))

    def list(
        self,
        *,
        model: str | None = None,
        status: str | None = None,
        environment: str | None = None,
        page_size: int = ops.PAGE_SIZE,
    ) -> AsyncIterator[Deployment]:
        pager = ops.list_deployments(model=model, status=status, environment=environment, limit=page_size)
        return self._client._iterate(pager, Deployment.from_json)

    async def get(self, name: str) -> Deployment:
        return await self._client._call(ops.get_deployment(name))

    async def update(
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
        return await self._client._call(ops.update_deployment(name, changes))

    async def rollback(self, name: str) -> Deployment:
        return await self._client._call(ops.rollback_deployment(name))

    async def delete(self, name: str) -> None:
        await self._client._call(ops.delete_deployment(name))


class AsyncExperiments(_AsyncResource):
    async def create(
        self, name: str, model: str, arms: Sequence[Mapping[str, Any]], **options: Any
    ) -> Experiment:
        return await self._client._call(ops.create_experiment(name, model, arms, options))

    def list(
        self,
        *,
        model: str | None = None,
        status: str | None = None,
        mode: str | None = None,
        page_size: int = ops.PAGE_SIZE,
    ) -> AsyncIterator[Experiment]:
        pager = ops.list_experiments(model=model, status=status, mode=mode, limit=page_size)
        return self._client._iterate(pager, Experiment.from_json)

    async def get(self, experiment: str) -> Experiment:
        return await self._client._call(ops.get_experiment(experiment))

    async def start(self, experiment: str) -> Experiment:
        return await self._client._call(ops.experiment_action(experiment, "start"))

    async def pause(self, experiment: str) -> Experiment:
        return await self._client._call(ops.experiment_action(experiment, "pause"))

    async def resume(self, experiment: str) -> Experiment:
        return await self._client._call(ops.experiment_action(experiment, "resume"))

    async def stop(self, experiment: str) -> Experiment:
        return await self._client._call(ops.experiment_action(experiment, "stop"))

    async def promote(self, experiment: str, arm: str | None = None) -> Experiment:
        return await self._client._call(ops.experiment_action(experiment, "promote", {"arm": arm}))

    async def results(self, experiment: str) -> ExperimentResults:
        return await self._client._call(ops.experiment_results(experiment))

    async def delete(self, experiment: str) -> None:
        await self._client._call(ops.delete_experiment(experiment))


class AsyncDatasets(_AsyncResource):
    async def upload(
        self, path: str | Path, *, name: str | None = None, format: str | None = None
    ) -> Dataset:
        return await self._client._call(ops.upload_dataset(path, name, format))

    def list(self, *, page_size: int = ops.PAGE_SIZE) -> AsyncIterator[Dataset]:
        return self._client._iterate(ops.list_datasets(page_size), Dataset.from_json)

    async def get(self, name: str) -> Dataset:
        return await self._client._call(ops.get_dataset(name))

    async def delete(self, name: str) -> None:
        await self._client._call(ops.delete_dataset(name))
