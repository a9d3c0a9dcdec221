"""The training use cases' ports over the trainer catalog and the dataset locator."""

from __future__ import annotations

from aiservice.domain.errors import FieldError
from aiservice.domain.models import Framework
from aiservice.domain.training import DatasetConfig, TrainingConfig
from aiservice.infrastructure.datasets.locator import DatasetLocator
from aiservice.infrastructure.datasets.readers import check_readable
from aiservice.infrastructure.training.catalog import validate


class FrameworkCatalog:
    def validate(self, framework: Framework, config: TrainingConfig) -> list[FieldError]:
        return validate(framework.value, config.algorithm, config.params)


class LocatedDatasets:
    def __init__(self, locator: DatasetLocator) -> None:
        self._locator = locator

    def resolve(self, tenant_id: str, reference: str, field: str) -> str:
        return self._locator.resolve(tenant_id, reference, field)

    def problems(self, uri: str, config: DatasetConfig) -> list[str]:
        return check_readable(
            uri, config.format, config.target, config.features, self._locator.storage_options(uri)
        )
