"""No broker: the relay hands each event straight to this process's handlers (one replica, or replicas
that need not hear of each other's changes)."""

from __future__ import annotations

from collections.abc import Callable

from aiservice.application.ports import CloudEvent, PublishFailed


class InProcessEventPublisher:
    """Publishing is handling: ``handle`` (the consumer side's processor) runs in the relay's thread."""

    name = "inprocess"

    def __init__(self, handle: Callable[[CloudEvent], object]) -> None:
        self._handle = handle

    def publish(self, events: list[CloudEvent]) -> None:
        for index, event in enumerate(events):
            try:
                self._handle(event)
            except Exception as exc:
                raise PublishFailed(index, f"{type(exc).__name__}: {exc}") from exc

    def close(self) -> None:
        pass
