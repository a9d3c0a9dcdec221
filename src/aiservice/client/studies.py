"""AutoML studies as handles: ``AutoMLStudy`` (sync) and ``AsyncAutoMLStudy`` refresh, cancel, wait for and
stream one study of the service: an ``event: trial`` per finished trial (with the best so far), then one
``event: status``. A dropped stream is resumed after the last event seen (``Last-Event-ID``), a bounded
number of times in a row, as a training job's is."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from typing import TYPE_CHECKING, Any

from aiservice.client import _lifecycle as ops
from aiservice.client._follow import afollow, await_end, follow, wait_for_end
from aiservice.client.errors import AutoMLStudyError
from aiservice.client.types import JobEvent, StudyState

if TYPE_CHECKING:
    from aiservice.client.aio import AsyncClient
    from aiservice.client.sync import Client


def raise_unless_succeeded(state: StudyState) -> None:
    if state.status != "succeeded":
        raise AutoMLStudyError(state.id, state.status, state.error)


class _Handle:
    state: StudyState

    @property
    def id(self) -> str:
        return self.state.id

    @property
    def model_id(self) -> str:
        return self.state.model_id

    @property
    def status(self) -> str:
        return self.state.status

    @property
    def best(self) -> dict[str, Any] | None:
        """The best complete trial (its algorithm, params, cvScore), the refitted one once succeeded."""
        return self.state.best

    @property
    def version(self) -> int | None:
        """The version the best trial was registered as, once the study succeeded."""
        return self.state.version

    @property
    def leaderboard(self) -> list[dict[str, Any]]:
        return self.state.leaderboard

    def __repr__(self) -> str:
        return f"{type(self).__name__}(id={self.id!r}, {self.state.summary()})"


class AutoMLStudy(_Handle):
    """An AutoML study: ``refresh()`` asks the service, ``wait()`` until it ends, ``stream()`` its trials."""

    def __init__(self, client: Client, state: StudyState) -> None:
        self._client = client
        self.state = state

    def refresh(self) -> AutoMLStudy:
        self.state = self._client._call(ops.get_study(self.model_id, self.id))
        return self

    def cancel(self) -> AutoMLStudy:
        self.state = self._client._call(ops.cancel_study(self.model_id, self.id))
        return self

    def wait(self, timeout: float | None = None, poll: float = 0.5) -> AutoMLStudy:
        """Until the study ends; raises ``AutoMLStudyError`` unless it succeeded (registering a version),
        ``TimeoutError`` after ``timeout`` seconds."""
        wait_for_end(
            lambda: self.refresh().state.finished,
            lambda: f"AutoML study {self.id} is still {self.status}",
            timeout,
            poll,
        )
        raise_unless_succeeded(self.state)
        return self

    def stream(self) -> Iterator[JobEvent]:
        """Each finished trial (``event == "trial"``) as it ends, then the final ``status`` event; the
        study is refreshed at the end. Raises nothing about how the study ended: ``wait()`` does."""
        path = ops.study_events_path(self.model_id, self.id)
        return follow(self._client, path, lambda: self.refresh().state.finished)


class AsyncAutoMLStudy(_Handle):
    """As ``AutoMLStudy``: ``await study.wait()``, ``async for event in study.stream()``."""

    def __init__(self, client: AsyncClient, state: StudyState) -> None:
        self._client = client
        self.state = state

    async def refresh(self) -> AsyncAutoMLStudy:
        self.state = await self._client._call(ops.get_study(self.model_id, self.id))
        return self

    async def cancel(self) -> AsyncAutoMLStudy:
        self.state = await self._client._call(ops.cancel_study(self.model_id, self.id))
        return self

    async def wait(self, timeout: float | None = None, poll: float = 0.5) -> AsyncAutoMLStudy:
        await await_end(
            self._finished, lambda: f"AutoML study {self.id} is still {self.status}", timeout, poll
        )
        raise_unless_succeeded(self.state)
        return self

    async def _finished(self) -> bool:
        return (await self.refresh()).state.finished

    def stream(self) -> AsyncIterator[JobEvent]:
        return afollow(self._client, ops.study_events_path(self.model_id, self.id), self._finished)
