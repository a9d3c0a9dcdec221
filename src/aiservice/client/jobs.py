"""Training jobs as handles: ``TrainingJob`` (sync) and ``AsyncTrainingJob`` refresh, wait for and stream
one job of the service (its Server-Sent Events, resumed after the last one seen when the connection drops)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Iterator
from typing import TYPE_CHECKING, Any

import httpx

from aiservice.client import _ops as ops
from aiservice.client._core import Reply, SseParser, problem_of, raise_unless_succeeded
from aiservice.client._http import transport_error
from aiservice.client.types import JobEvent, JobState

if TYPE_CHECKING:
    from aiservice.client.aio import AsyncClient
    from aiservice.client.sync import Client

RECONNECTS = 5  # a dropped event stream is resumed this many times in a row before the error is raised


def reconnect_delay(failures: int) -> float:
    """Seconds before the ``failures``-th reconnection in a row: 0.25, 0.5, 1, 2, 4 (a server that is gone
    is not hammered)."""
    return float(min(0.25 * 2 ** (failures - 1), 4.0))


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
        deadline = None if timeout is None else time.monotonic() + timeout
        while not self.refresh().state.finished:
            if deadline is not None and time.monotonic() >= deadline:
                raise TimeoutError(f"training job {self.id} is still {self.status} after {timeout:g} s")
            time.sleep(poll)
        raise_unless_succeeded(self.state)
        return self

    def stream(self) -> Iterator[JobEvent]:
        """The job's progress and status events as they happen, until its final status; a dropped
        connection is resumed after the last event seen."""
        parser = SseParser()
        client = self._client
        failures = 0
        while True:
            headers = {"Accept": "text/event-stream"}
            if parser.last_id is not None:
                headers["Last-Event-ID"] = str(parser.last_id)
            try:
                with client._http.stream(
                    "GET", ops.job_events_path(self.id), headers=headers, timeout=None
                ) as r:
                    if r.status_code >= 400:
                        raise problem_of(Reply(r.status_code, r.headers, r.read()))
                    for text in r.iter_text():
                        for event in parser.feed(text):
                            failures = 0
                            yield event
                            if event.final:
                                self.refresh()
                                return
                return
            except httpx.TransportError as exc:
                failures += 1
                if parser.last_id is None or failures > RECONNECTS:
                    raise transport_error(client.url, exc) from exc
                time.sleep(reconnect_delay(failures))


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
        deadline = None if timeout is None else time.monotonic() + timeout
        while not (await self.refresh()).state.finished:
            if deadline is not None and time.monotonic() >= deadline:
                raise TimeoutError(f"training job {self.id} is still {self.status} after {timeout:g} s")
            await asyncio.sleep(poll)
        raise_unless_succeeded(self.state)
        return self

    async def stream(self) -> AsyncIterator[JobEvent]:
        parser = SseParser()
        client = self._client
        failures = 0
        while True:
            headers = {"Accept": "text/event-stream"}
            if parser.last_id is not None:
                headers["Last-Event-ID"] = str(parser.last_id)
            try:
                path = ops.job_events_path(self.id)
                async with client._http.stream("GET", path, headers=headers, timeout=None) as r:
                    if r.status_code >= 400:
                        raise problem_of(Reply(r.status_code, r.headers, await r.aread()))
                    async for text in r.aiter_text():
                        for event in parser.feed(text):
                            failures = 0
                            yield event
                            if event.final:
                                await self.refresh()
                                return
                return
            except httpx.TransportError as exc:
                failures += 1
                if parser.last_id is None or failures > RECONNECTS:
                    raise transport_error(client.url, exc) from exc
                await asyncio.sleep(reconnect_delay(failures))
