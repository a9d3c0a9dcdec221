"""The sync client's resources: ``client.models``, ``.versions``, ``.jobs``, ``.deployments``,
``.experiments`` and ``.datasets`` (``aio_resources.py`` has their async twins)."""

from __future__ import annotations

import builtins
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from aiservice.client import _lifecycle as lifecycle
from aiservice.client import _ops as ops
from aiservice.client._core import Reply, problem_of
from aiservice.client._http import Digest
from aiservice.client._progress import Bar
from aiservice.client.jobs import TrainingJob
from aiservice.client.studies import AutoMLStudy
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

    def import_model(
        self,
        model: str,
        archive: str | Path | bytes,
        *,
        source: str | None = None,
        metadata: Mapping[str, Any] | None = None,
        filename: str | None = None,
        progress: bool = False,
    ) -> Version:
        """Import an MLflow model folder (``MLmodel``) or a Hugging Face-style one (``config.json``) as the
        model's next version: a zip or tar.gz (path or bytes), or a folder, zipped here. ``source``
        (``mlflow``, ``huggingface``) is told by the files when left out; ``metadata``: description,
        metrics, params, source_run."""
        upload = lifecycle.import_upload(archive, source, metadata, filename)
        with Bar(upload.file_size, f"Uploading {upload.filename}", enabled=progress, bytes_=True) as bar:
            return self._client._call(lifecycle.import_model(model, upload), bar)


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

    def optimize(
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
        """A ``quantization``, ``pruning`` or ``float16`` copy of a version, measured on validation ``rows``
        and ``labels`` (or a sample of a ``dataset``: a path, URI or uploaded ``Dataset``, with its
        ``target``) and registered as a new version, which is returned (an ONNX result of another
        framework goes to ``target_model``, default ``<name>-onnx``). A result that loses more than
        ``max_accuracy_drop`` raises ``AccuracyDropError`` (its ``optimization`` has the figures)."""
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
        return self._client._call(lifecycle.optimize(model, version, body))

    def export(self, model: str, version: int, format: str = "onnx", path: str | Path | None = None) -> Path:
        """The version as an edge bundle (a zip: the model file, schema.json, README.md, run.py) in
        ``format`` (onnx, torchscript, tflite), streamed to ``path`` (into it when a folder; default the
        service's file name here), checked against its SHA-256; returns where it was written."""
        client = self._client
        call_path, params = lifecycle.export_path(model, version), {"format": lifecycle.check_format(format)}
        with client._http.stream("GET", call_path, params=params) as response:
            if response.status_code >= 400:
                raise problem_of(Reply(response.status_code, response.headers, response.read()))
            fallback = f"{model}-v{version}-{format}.zip"
            name = lifecycle.attachment_name(response.headers.get("content-disposition"), fallback)
            staged = lifecycle.Staged(lifecycle.export_target(path, name))
            try:
                digest = Digest(response.headers.get("etag"))
                for chunk in response.iter_bytes():
                    digest.update(chunk)
                    staged.write(chunk)
                digest.verify()
            except BaseException:
                staged.discard()
                raise
            return staged.commit()

    def delete_alias(self, model: str, alias: str) -> None:
        self._client._call(ops.delete_alias(model, alias))


class Jobs(_Resource):
    def list(
        self,
        *,
        model: str | None = None,
        status: str | None = None,
        kind: str | None = None,
        automl_study: str | None = None,
        page_size: int = ops.PAGE_SIZE,
    ) -> Iterator[TrainingJob]:
        """Newest first; ``kind``: "training" or "trial" (AutoML trials); ``automl_study``: its trials."""
        pager = ops.list_jobs(model, status, page_size, kind, automl_study)
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


class AutoML(_Resource):
    """``client.automl``: a model's AutoML studies (each a handle: ``wait()``, ``stream()``, ``cancel()``)."""

    def start(
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
    ) -> AutoMLStudy:
        """Start a study on ``dataset`` (a path the service reads, ``dataset://name``, an uploaded
        ``Dataset``, or the API's ``datasetConfig`` mapping) for a ``task`` (classification, regression)
        scored by ``metric``, within ``max_trials`` and/or ``timeout_seconds``; its best trial is
        registered as the model's next version."""
        data = lifecycle.dataset_config(dataset, target, features, format, validation_split, validation_path)
        options = {
            "algorithms": algorithms,
            "search_spaces": search_spaces,
            "seed": seed,
            "cv_folds": cv_folds,
            "parallel_trials": parallel_trials,
        }
        body = lifecycle.study_body(data, task, metric, max_trials, timeout_seconds, options)
        return AutoMLStudy(self._client, self._client._call(lifecycle.start_study(model, body)))

    def list(self, model: str, *, page_size: int = ops.PAGE_SIZE) -> Iterator[AutoMLStudy]:
        """The model's studies, newest first."""
        pager = lifecycle.list_studies(model, page_size)
        return self._client._iterate(
            pager, lambda item: AutoMLStudy(self._client, StudyState.from_json(item))
        )

    def get(self, model: str, study: str) -> AutoMLStudy:
        return AutoMLStudy(self._client, self._client._call(lifecycle.get_study(model, study)))

    def cancel(self, model: str, study: str) -> AutoMLStudy:
        """Cancels a queued or running study (its running trial jobs too); nothing is registered."""
        return AutoMLStudy(self._client, self._client._call(lifecycle.cancel_study(model, study)))
