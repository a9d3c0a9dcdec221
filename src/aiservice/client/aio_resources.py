"""The async client's resources: the same as ``resources.py``, awaited (listings are async iterators)."""

from __future__ import annotations

import builtins
from collections.abc import AsyncIterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from aiservice.client import _lifecycle as lifecycle
from aiservice.client import _ops as ops
from aiservice.client._core import Reply, problem_of
from aiservice.client._http import Digest
from aiservice.client._progress import Bar
from aiservice.client.jobs import AsyncTrainingJob
from aiservice.client.studies import AsyncAutoMLStudy
from aiservice.client.types import (
    Alias,
    Dataset,
    Deployment,
    Experiment,
    ExperimentResults,
    JobState,
    Model,
    StudyState,
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

    async def import_model(
        self,
        model: str,
        archive: str | Path | bytes,
        *,
        source: str | None = None,
        metadata: Mapping[str, Any] | None = None,
        filename: str | None = None,
        progress: bool = False,
    ) -> Version:
        """As ``Models.import_model``."""
        upload = lifecycle.import_upload(archive, source, metadata, filename)
        with Bar(upload.file_size, f"Uploading {upload.filename}", enabled=progress, bytes_=True) as bar:
            return await self._client._call(lifecycle.import_model(model, upload), bar)


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

    async def optimize(
        self,
        model: str,
        version: int,
        method: str,
        *,
        rows: Any = None,
        labels: Any = None,
        dataset: Any = None,
        target: str | None = None,
        sample: int | None = None,
        max_accuracy_drop: float | None = None,
        mode: str | None = None,
        form: str | None = None,
        sparsity: float | None = None,
        calibration_rows: Any = None,
        target_model: str | None = None,
        description: str | None = None,
        latency_calls: int | None = None,
    ) -> Version:
        """As ``Versions.optimize``."""
        body = lifecycle.optimize_body(
            method,
            rows,
            labels,
            dataset,
            target,
            sample,
            {
                "max_accuracy_drop": max_accuracy_drop,
                "mode": mode,
                "form": form,
                "sparsity": sparsity,
                "calibration_rows": calibration_rows,
                "target_model": target_model,
                "description": description,
                "latency_calls": latency_calls,
            },
        )
        return await self._client._call(lifecycle.optimize(model, version, body))

    async def export(
        self, model: str, version: int, format: str = "onnx", path: str | Path | None = None
    ) -> Path:
        """As ``Versions.export``: streamed to disk, checked against its SHA-256."""
        client = self._client
        call_path, params = lifecycle.export_path(model, version), {"format": lifecycle.check_format(format)}
        async with client._http.stream("GET", call_path, params=params) as response:
            if response.status_code >= 400:
                raise problem_of(Reply(response.status_code, response.headers, await response.aread()))
            fallback = f"{model}-v{version}-{format}.zip"
            name = lifecycle.attachment_name(response.headers.get("content-disposition"), fallback)
            staged = lifecycle.Staged(lifecycle.export_target(path, name))
            try:
                digest = Digest(response.headers.get("etag"))
                async for chunk in response.aiter_bytes():
                    digest.update(chunk)
                    staged.write(chunk)
                digest.verify()
            except BaseException:
                staged.discard()
                raise
            return staged.commit()

    async def delete_alias(self, model: str, alias: str) -> None:
        await self._client._call(ops.delete_alias(model, alias))


class AsyncJobs(_AsyncResource):
    def list(
        self,
        *,
        model: str | None = None,
        status: str | None = None,
        kind: str | None = None,
        automl_study: str | None = None,
        page_size: int = ops.PAGE_SIZE,
    ) -> AsyncIterator[AsyncTrainingJob]:
        """Newest first; ``kind``: "training" or "trial" (AutoML trials); ``automl_study``: its trials."""
        pager = ops.list_jobs(model, status, page_size, kind, automl_study)
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


class AsyncAutoML(_AsyncResource):
    """As ``AutoML``: ``await client.automl.start(...)`` gives an ``AsyncAutoMLStudy``."""

    async def start(
        self,
        model: str,
        dataset: Any,
        *,
        task: str,
        metric: str,
        target: str | None = None,
        features: Sequence[str] | None = None,
        format: str | None = None,
        validation_split: float | None = None,
        validation_path: str | None = None,
        max_trials: int | None = None,
        timeout_seconds: int | None = None,
        algorithms: Sequence[str] | None = None,
        search_spaces: Mapping[str, Any] | None = None,
        seed: int | None = None,
        cv_folds: int | None = None,
        parallel_trials: int | None = None,
    ) -> AsyncAutoMLStudy:
        data = lifecycle.dataset_config(dataset, target, features, format, validation_split, validation_path)
        options = {
            "algorithms": algorithms,
            "search_spaces": search_spaces,
            "seed": seed,
            "cv_folds": cv_folds,
            "parallel_trials": parallel_trials,
        }
        body = lifecycle.study_body(data, task, metric, max_trials, timeout_seconds, options)
        return AsyncAutoMLStudy(self._client, await self._client._call(lifecycle.start_study(model, body)))

    def list(self, model: str, *, page_size: int = ops.PAGE_SIZE) -> AsyncIterator[AsyncAutoMLStudy]:
        pager = lifecycle.list_studies(model, page_size)
        client = self._client
        return client._iterate(pager, lambda item: AsyncAutoMLStudy(client, StudyState.from_json(item)))

    async def get(self, model: str, study: str) -> AsyncAutoMLStudy:
        return AsyncAutoMLStudy(self._client, await self._client._call(lifecycle.get_study(model, study)))

    async def cancel(self, model: str, study: str) -> AsyncAutoMLStudy:
        return AsyncAutoMLStudy(self._client, await self._client._call(lifecycle.cancel_study(model, study)))
