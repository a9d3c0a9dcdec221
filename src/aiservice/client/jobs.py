"""Training jobs as handles: ``TrainingJob`` (sync) and ``AsyncTrainingJob`` refresh, wait for and stream
one job of the service (its Server-Sent Events, resumed after the last one seen when the connection drops)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from typing import TYPE_CHECKING, Any

from aiservice.client import _ops as ops
from aiservice.client._core import raise_unless_succeeded
from aiservice.client._follow import afollow, await_end, follow, wait_for_end
from aiservice.client.types import JobEvent, JobState

if TYPE_CHECKING:
    from aiservice.client.aio import AsyncClient
    from aiservice.client.sync import Client


class TrainingJob:
    """A training job: ``refresh()`` asks the service, ``wait()`` until it ends, ``stream()`` its events."""

    def __init__(self, client: Client, state: JobState) -> None:
        self._client = client
        self.state = state

    @property
    def id(self) -> str:
        return self.state.id

    @property
    def status(self) -> str:
        return self.state.status

    @property
    def version(self) -> int | None:
        return self.state.version

    @property
    def metrics(self) -> dict[str, Any]:
        return self.state.metrics

    def __repr__(self) -> str:
        s = self.state
        return (
            f"TrainingJob(id={s.id!r}, status={s.status!r}, progress={s.progress:.0%}, version={s.version})"
        )

    def refresh(self) -> TrainingJob:
        self.state = self._client._call(ops.get_job(self.id))
        return self

    def cancel(self) -> TrainingJob:
        self.state = self._client._call(ops.cancel_job(self.id))
        return self

    def wait(self, timeout: float | None = None, poll: float = 0.5) -> TrainingJob:
        """Until the job ends; raises ``TrainingJobError`` unless it succeeded, ``TimeoutError`` after
        ``timeout`` seconds."""
        wait_for_end(
            lambda: self.refresh().state.finished,
            lambda: f"training job {self.id} is still {self.status}",
            timeout,
            poll,
        )
        raise_unless_succeeded(self.state)
        return self

    def stream(self) -> Iterator[JobEvent]:
        """The job's progress and status events as they happen, until its final status; a dropped
        connection is resumed after the last event seen."""
        return follow(self._client, ops.job_events_path(self.id), lambda: self.refresh().state.finished)


class AsyncTrainingJob:
    """As ``TrainingJob``: ``await job.refresh()``, ``await job.wait()``, ``async for e in job.stream()``."""

    def __init__(self, client: AsyncClient, state: JobState) -> None:
        self._client = client
        self.state = state

    @property
    def id(self) -> str:
        return self.state.id

    @property
    def status(self) -> str:
        return self.state.status

    @property
    def version(self) -> int | None:
        return self.state.version

    @property
    def metrics(self) -> dict[str, Any]:
        return self.state.metrics

    def __repr__(self) -> str:
        s = self.state
        shown = f"id={s.id!r}, status={s.status!r}, progress={s.progress:.0%}, version={s.version}"
        return f"AsyncTrainingJob({shown})"

    async def refresh(self) -> AsyncTrainingJob:
        self.state = await self._client._call(ops.get_job(self.id))
        return self

    async def cancel(self) -> AsyncTrainingJob:
        self.state = await self._client._call(ops.cancel_job(self.id))
        return self

    async def wait(self, timeout: float | None = None, poll: float = 0.5) -> AsyncTrainingJob:
        await await_end(
            self._finished, lambda: f"training job {self.id} is still {self.status}", timeout, poll
        )
        raise_unless_succeeded(self.state)
        return self

    async def _finished(self) -> bool:
        return (await self.refresh()).state.finished

    def stream(self) -> AsyncIterator[JobEvent]:
        return afollow(self._client, ops.job_events_path(self.id), self._finished)
