"""Runtimes found through the ``aiservice.runtimes`` entry-point group, so third parties can add one."""

from __future__ import annotations

import logging
from importlib.metadata import entry_points

from aiservice.application.ports import Runtime
from aiservice.domain.errors import Unavailable
from aiservice.domain.models import Framework
from aiservice.infrastructure.runtimes.archives import ArchiveLimits

GROUP = "aiservice.runtimes"
log = logging.getLogger(__name__)


class RuntimeRegistry:
    def __init__(self, runtimes: list[Runtime]) -> None:
        self._by_framework: dict[Framework, Runtime] = {}
        for runtime in runtimes:
            for framework in runtime.frameworks:
                self._by_framework.setdefault(framework, runtime)

    @classmethod
    def discover(cls, archive_limits: ArchiveLimits | None = None) -> RuntimeRegistry:
        """Every installed runtime; those that unpack zips (an ``archive_limits`` attribute) get the
        operator's limits, the ones uploads were checked against, so a load refuses no less and no
        more than the upload did."""
        found: list[Runtime] = []
        for entry in entry_points(group=GROUP):
            try:
                runtime = entry.load()()
            except Exception:  # a broken plugin must not take the service down
                log.warning("runtime plugin %s failed to load", entry.name, exc_info=True)
                continue
            if archive_limits is not None and isinstance(
                getattr(runtime, "archive_limits", None), ArchiveLimits
            ):
                runtime.archive_limits = archive_limits
            found.append(runtime)
        return cls(found)

    def get(self, framework: Framework) -> Runtime:
        runtime = self._by_framework.get(framework)
        if runtime is None:
            raise Unavailable(f"No runtime for {framework.value} is installed.", code="runtime-unavailable")
        why = runtime.available()
        if why is not None:
            raise Unavailable(
                f"The {framework.value} runtime is unavailable: {why}", code="runtime-unavailable"
            )
        return runtime

    def status(self) -> dict[str, str]:
        """Each framework and whether it can serve ("available" or the reason it cannot)."""
        return {
            framework.value: (self._by_framework[framework].available() or "available")
            if framework in self._by_framework
            else "not installed"
            for framework in Framework
        }
