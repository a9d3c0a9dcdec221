"""Runtimes found through the ``aiservice.runtimes`` entry-point group, so third parties can add one."""

from __future__ import annotations

import logging
from importlib.metadata import entry_points

from aiservice.application.ports import Runtime
from aiservice.domain.errors import Unavailable
from aiservice.domain.models import Framework

GROUP = "aiservice.runtimes"
log = logging.getLogger(__name__)


class RuntimeRegistry:
    def __init__(self, runtimes: list[Runtime]) -> None:
        self._by_framework: dict[Framework, Runtime] = {}
        for runtime in runtimes:
            for framework in runtime.frameworks:
                self._by_framework.setdefault(framework, runtime)

    @classmethod
    def discover(cls) -> RuntimeRegistry:
        found: list[Runtime] = []
        for entry in entry_points(group=GROUP):
            try:
                found.append(entry.load()())
            except Exception:  # a broken plugin must not take the service down
                log.warning("runtime plugin %s failed to load", entry.name, exc_info=True)
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
