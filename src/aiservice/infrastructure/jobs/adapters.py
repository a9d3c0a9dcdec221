"""The training use cases' ports over the trainer catalog and the dataset locator."""

from __future__ import annotations

from aiservice.domain.errors import FieldError, InvalidInput
from aiservice.domain.models import Framework
from aiservice.domain.training import DatasetConfig, TargetValues, TrainingConfig
from aiservice.infrastructure.datasets.labels import target_values
from aiservice.infrastructure.datasets.locator import DatasetLocator
from aiservice.infrastructure.datasets.readers import DatasetError, check_readable, columns, folder_format
from aiservice.infrastructure.training.catalog import default_algorithm, task_of, validate


class TrainerCatalog:
    """The installed plugins' trainers, asked before a job is queued."""

    def validate(self, framework: Framework, config: TrainingConfig) -> list[FieldError]:
        return validate(framework, config.algorithm, config.params)

    def task(self, framework: Framework, config: TrainingConfig) -> str | None:
        return task_of(framework, config.algorithm) if config.algorithm else None

    def default_algorithm(self, framework: Framework, task: str, images: bool) -> str | None:
        return default_algorithm(framework, task, images)


class LocatedDatasets:
    def __init__(self, locator: DatasetLocator) -> None:
        self._locator = locator

    def resolve(self, tenant_id: str, reference: str, field: str) -> str:
        return self._locator.resolve(tenant_id, reference, field)

    def folder_format(self, uri: str, field: str) -> str | None:
        try:
            return folder_format(uri, self._locator.storage_options(uri))
        except DatasetError as exc:
            raise InvalidInput(f"{field}: {exc}", errors=[FieldError(field, str(exc))]) from exc

    def columns(self, uri: str, format: str) -> list[str]:
        return columns(uri, format, self._locator.storage_options(uri))

    def problems(self, uri: str, config: DatasetConfig) -> list[str]:
        return check_readable(
            uri, config.format, config.target, config.features, self._locator.storage_options(uri)
        )

    def target_values(self, uri: str, config: DatasetConfig, field: str) -> TargetValues:
        try:
            return target_values(uri, config.format, config.target, self._locator.storage_options(uri))
        except DatasetError as exc:
            raise InvalidInput(f"{field}: {exc}", errors=[FieldError(field, str(exc))]) from exc
