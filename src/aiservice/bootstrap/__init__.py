"""The composition root: Settings -> adapters -> use cases. The only package that knows every adapter.

``wiring`` builds the service; ``events`` and ``backends`` hold a factory per backend a setting
chooses; ``secrets`` reads keys and secrets; ``container`` is what the service is made of."""

from aiservice.bootstrap.container import DEFAULT_TENANT, Container
from aiservice.bootstrap.secrets import artifact_store, new_master_key, rotate_artifact_keys, token_service
from aiservice.bootstrap.wiring import bootstrap
from aiservice.settings import ConfigurationError

__all__ = [
    "DEFAULT_TENANT",
    "ConfigurationError",
    "Container",
    "artifact_store",
    "bootstrap",
    "new_master_key",
    "rotate_artifact_keys",
    "token_service",
]
