"""Framework plugins found through the ``aiservice.runtimes`` entry-point group, so third parties can add
one: each entry names a function that returns a ``FrameworkPlugin``. Every list of frameworks the
service uses (which train, compile, stream, preload, use a GPU) is a question put to this registry."""

from __future__ import annotations

import functools
import logging
from collections.abc import Mapping
from functools import cache
from importlib.metadata import EntryPoint, entry_points

from aiservice.application.frameworks import FrameworkCatalog
from aiservice.application.ports import Runtime
from aiservice.domain.errors import Unavailable
from aiservice.domain.models import Framework
from aiservice.infrastructure.runtimes.archives import ArchiveLimits
from aiservice.infrastructure.runtimes.plugin import FrameworkPlugin, Trainer

GROUP = "aiservice.runtimes"
log = logging.getLogger(__name__)


class FrameworkRegistry:
    def __init__(self, plugins: list[FrameworkPlugin]) -> None:
        self._plugins: dict[str, FrameworkPlugin] = {}
        for plugin in plugins:
            self._plugins.setdefault(str(plugin.name), plugin)

    @classmethod
    def discover(cls, archive_limits: ArchiveLimits | None = None) -> FrameworkRegistry:
        """Every installed plugin; runtimes that unpack zips (an ``archive_limits`` attribute) get the
        operator's limits, the ones uploads were checked against, so a load refuses no less and no
        more than the upload did."""
        found: list[FrameworkPlugin] = []
        for entry in _installed_entry_points():
            try:
                plugin = entry.load()()
            except Exception:  # a broken plugin must not take the service down
                log.warning("framework plugin %s failed to load", entry.name, exc_info=True)
                continue
            if not isinstance(plugin, FrameworkPlugin):
                log.warning("framework plugin %s gave a %s, not a FrameworkPlugin", entry.name, type(plugin))
                continue
            runtime = plugin.runtime
            if archive_limits is not None and isinstance(
                getattr(runtime, "archive_limits", None), ArchiveLimits
            ):
                runtime.archive_limits = archive_limits  # type: ignore[attr-defined]
            found.append(plugin)
        return cls(found)

    def plugins(self) -> list[FrameworkPlugin]:
        return [self._plugins[name] for name in sorted(self._plugins)]

    def plugin(self, framework: str) -> FrameworkPlugin | None:
        return self._plugins.get(framework)

    def get(self, framework: Framework) -> Runtime:
        """The framework's runtime, ready to load; ``Unavailable`` (runtime-unavailable) when its plugin
        is not installed or its framework cannot be imported."""
        plugin = self._plugins.get(framework)
        if plugin is None:
            raise Unavailable(f"No runtime for {framework} is installed.", code="runtime-unavailable")
        why = plugin.runtime.available()
        if why is not None:
            raise Unavailable(f"The {framework} runtime is unavailable: {why}", code="runtime-unavailable")
        return plugin.runtime

    def trainer(self, framework: str) -> Trainer | None:
        plugin = self._plugins.get(framework)
        return plugin.trainer if plugin is not None else None

    def catalog(self) -> FrameworkCatalog:
        """What the use cases may ask about the installed frameworks."""
        return FrameworkCatalog(plugin.traits() for plugin in self.plugins())

    def devices(self, backends: Mapping[str, str]) -> dict[Framework, str]:
        """Each framework's load device: the backend setting its plugin's accelerator follows."""
        return {
            plugin.name: backends.get(plugin.accelerator, "cpu")
            for plugin in self.plugins()
            if plugin.accelerator is not None
        }

    def preload(self) -> list[str]:
        """The modules the plugins want imported once in the fork server, in plugin order."""
        return list(dict.fromkeys(m for plugin in self.plugins() for m in plugin.preload))


@cache
def installed() -> FrameworkRegistry:
    """The plugins of this process, found once: for lookups that load nothing (trainers, catalogs)."""
    return FrameworkRegistry.discover()


@functools.cache
def _installed_entry_points() -> tuple[EntryPoint, ...]:
    """The ``aiservice.runtimes`` entry points of the installed packages, read once per process: reading
    every distribution's metadata costs milliseconds, and what is installed does not change while the
    service runs. Each ``discover`` still builds fresh plugin objects from them."""
    return tuple(entry_points(group=GROUP))
