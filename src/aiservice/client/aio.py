"""``AsyncClient``: the SDK with ``await`` (httpx.AsyncClient), the same surface as ``Client`` in ``sync.py``.
Calls are built and answers read by the same code (``_ops``, ``_predict``, ``_core``); only sending,
sleeping and iterating differ. ``tests/client`` checks the two surfaces stay the same."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any, Literal, TypeVar

import httpx

from aiservice.client import _ops as ops
from aiservice.client import _predict as predicting
from aiservice.client._core import Call, Reply, RetryPolicy, check
from aiservice.client._http import DEFAULT_TIMEOUT, base_headers, note_retry, reply_of, transport_error
from aiservice.client._progress import Bar
from aiservice.client.aio_resources import (
    AsyncAutoML,
    AsyncDatasets,
    AsyncDeployments,
    AsyncExperiments,
    AsyncJobs,
    AsyncModels,
    AsyncVersions,
)
from aiservice.client.jobs import AsyncTrainingJob
from aiservice.client.types import Dataset, Page

T = TypeVar("T")


async def _body(chunks: Any) -> AsyncIterator[bytes]:
    for chunk in chunks:  # file reads of 1 MiB: short enough to do on the loop
        yield chunk


class AsyncClient:
    """``async with AsyncClient(url, token, tenant) as client: await client.models.get("iris")``."""

    def __init__(
        self,
        url: str,
        token: str | None = None,
        tenant: str | None = None,
        *,
        api_key: str | None = None,
        timeout: float = DEFAULT_TIMEOUT,
        retries: int = 3,
        backoff: float = 0.5,
        max_retry_delay: float = 60.0,
    ) -> None:
        self.url = url.rstrip("/")
        self.tenant = tenant
        self.retry = RetryPolicy(retries, backoff, max_retry_delay)
        self._http = httpx.AsyncClient(
            base_url=self.url, headers=base_headers(token, api_key, tenant), timeout=timeout
        )
        self.models = AsyncModels(self)
        self.versions = AsyncVersions(self)
        self.jobs = AsyncJobs(self)
        self.deployments = AsyncDeployments(self)
        self.experiments = AsyncExperiments(self)
        self.datasets = AsyncDatasets(self)
        self.automl = AsyncAutoML(self)

    def __repr__(self) -> str:
        return f"AsyncClient({self.url!r}, tenant={self.tenant!r})"

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        await self.close()

    async def close(self) -> None:
        await self._http.aclose()

    # Transport

    async def _send(self, call: Call[Any], progress: Bar | None = None) -> Reply:
        attempt = 0
        while True:
            reply: Reply | None = None
            error: httpx.TransportError | None = None
            try:
                content = None if call.upload is None else _body(call.upload.chunks(progress))
                response = await self._http.request(
                    call.method,
                    call.path,
                    params=call.query(),
                    json=call.json,
                    content=content,
                    headers=call.body_headers(),
                )
                reply = reply_of(response)
            except httpx.TransportError as exc:
                error = exc
            delay = self.retry.delay(attempt, reply, call.idempotent)
            if delay is None:
                break
            note_retry(call, attempt, delay, reply, error)
            await asyncio.sleep(delay)
            attempt += 1
        if reply is None:
            assert error is not None
            raise transport_error(self.url, error) from error
        return check(reply)

    async def _call(self, call: Call[T], progress: Bar | None = None) -> T:
        return call.parse(await self._send(call, progress))

    async def _iterate(
        self, pager: Callable[[str | None], Call[Page]], kind: Callable[[Any], T]
    ) -> AsyncIterator[T]:
        cursor: str | None = None
        while True:
            page = await self._call(pager(cursor))
            for item in page.items:
                yield kind(item)
            if not page.next_cursor:
                return
            cursor = page.next_cursor

    # Predictions and training

    async def predict(
        self, model: str, input: Any, *, version: int | None = None, alias: str | None = None, **options: Any
    ) -> Any:
        """As ``Client.predict``."""
        body = predicting.options_json(version, alias, options)
        if predicting.is_frame(input) or (
            isinstance(input, list) and input and not predicting.is_number(input[0])
        ):
            return await self.batch_predict(model, input, version=version, alias=alias, **options)
        if hasattr(input, "ndim") and input.ndim == 2:
            return await self.batch_predict(model, input, version=version, alias=alias, **options)
        return await self._call(predicting.predict_call(model, input, body))

    async def batch_predict(
        self,
        model: str,
        rows: Any,
        *,
        chunk_size: int = 256,
        concurrency: int = 4,
        progress: bool = False,
        errors: Literal["raise", "return"] = "raise",
        version: int | None = None,
        alias: str | None = None,
        **options: Any,
    ) -> Any:
        """As ``Client.batch_predict``: at most ``concurrency`` chunks in flight."""
        inputs = predicting.many_inputs(rows)
        calls = predicting.batch_calls(
            model, inputs, chunk_size, predicting.options_json(version, alias, options)
        )
        gate = asyncio.Semaphore(max(1, concurrency))
        with Bar(len(inputs), "Predicting", enabled=progress) as bar:

            async def run(call: Call[list[predicting.Outcome]]) -> list[predicting.Outcome]:
                async with gate:
                    answers = await self._call(call)
                bar.advance(len(answers))
                return answers

            chunks = await asyncio.gather(*(run(call) for call in calls))
        outcomes = predicting.settle((o for chunk in chunks for o in chunk), errors == "raise")
        return predicting.frame_of(outcomes, rows) if predicting.is_frame(rows) else outcomes

    async def train(
        self,
        model: str,
        dataset: str | Path | Dataset,
        *,
        target: str | None = None,
        algorithm: str | None = None,
        params: Mapping[str, Any] | None = None,
        features: Sequence[str] | None = None,
        format: str | None = None,
        validation_split: float | None = None,
        resources: Mapping[str, Any] | None = None,
        **training: Any,
    ) -> AsyncTrainingJob:
        """As ``Client.train``."""
        body = ops.training_body(
            dataset, target, algorithm, params, features, format, validation_split, resources, training
        )
        return AsyncTrainingJob(self, await self._call(ops.train(model, body)))


__all__ = ["AsyncClient", "AsyncTrainingJob"]
