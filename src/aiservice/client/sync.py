"""``Client``: the synchronous SDK (httpx). ``AsyncClient`` in ``aio.py`` has the same surface with ``await``;
both build their calls in ``_ops``/``_predict`` and read the answers there."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from types import TracebackType
from typing import Any, Literal, TypeVar

import httpx

from aiservice.client import _ops as ops
from aiservice.client import _predict as predicting
from aiservice.client._core import Call, Reply, RetryPolicy, check
from aiservice.client._http import DEFAULT_TIMEOUT, base_headers, note_retry, reply_of, transport_error
from aiservice.client._progress import Bar
from aiservice.client.jobs import TrainingJob
from aiservice.client.resources import AutoML, Datasets, Deployments, Experiments, Jobs, Models, Versions
from aiservice.client.types import Dataset, Page, Prediction

T = TypeVar("T")


class Client:
    """A connection to one service for one tenant: ``Client("http://localhost:8000", token, "acme")``.

    ``retries`` is how often a call refused with 429 or 503 (after ``Retry-After``, else an exponential
    backoff), or an idempotent call whose connection failed, is tried again. Use it as a context manager
    or call ``close()``.
    """

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
        self._http = httpx.Client(
            base_url=self.url, headers=base_headers(token, api_key, tenant), timeout=timeout
        )
        self.models = Models(self)
        self.versions = Versions(self)
        self.jobs = Jobs(self)
        self.deployments = Deployments(self)
        self.experiments = Experiments(self)
        self.datasets = Datasets(self)
        self.automl = AutoML(self)

    def __repr__(self) -> str:
        return f"Client({self.url!r}, tenant={self.tenant!r})"

    def __enter__(self) -> Client:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    # Transport

    def _send(self, call: Call[Any], progress: Bar | None = None) -> Reply:
        attempt = 0
        while True:
            reply: Reply | None = None
            error: httpx.TransportError | None = None
            try:
                content = None if call.upload is None else call.upload.chunks(progress)
                response = self._http.request(
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
            time.sleep(delay)
            attempt += 1
        if reply is None:
            assert error is not None
            raise transport_error(self.url, error) from error
        return check(reply)

    def _call(self, call: Call[T], progress: Bar | None = None) -> T:
        return call.parse(self._send(call, progress))

    def _iterate(self, pager: Callable[[str | None], Call[Page]], kind: Callable[[Any], T]) -> Iterator[T]:
        """Every item of a listing, page after page (the next page is fetched when the last is used up)."""
        cursor: str | None = None
        while True:
            page = self._call(pager(cursor))
            yield from (kind(item) for item in page.items)
            if not page.next_cursor:
                return
            cursor = page.next_cursor

    # Predictions and training

    def predict(
        self, model: str, input: Any, *, version: int | None = None, alias: str | None = None, **options: Any
    ) -> Any:
        """One input (a dict of features, a row of numbers) -> a ``Prediction``. A DataFrame -> a DataFrame
        on the same index; a list or 2-D array -> a list of ``Prediction``. ``options``:
        ``include_confidence``, ``include_feature_importance``."""
        body = predicting.options_json(version, alias, options)
        if predicting.is_frame(input) or (
            isinstance(input, list) and input and not predicting.is_number(input[0])
        ):
            return self.batch_predict(model, input, version=version, alias=alias, **options)
        if hasattr(input, "ndim") and input.ndim == 2:
            return self.batch_predict(model, input, version=version, alias=alias, **options)
        return self._call(predicting.predict_call(model, input, body))

    def batch_predict(
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
        """Many inputs in chunks of ``chunk_size``, ``concurrency`` chunks at a time; answers in input order
        (a DataFrame on the input's index for a DataFrame). ``errors="return"`` puts a failed input's
        ``ProblemError`` in its place instead of raising it."""
        inputs = predicting.many_inputs(rows)
        calls = predicting.batch_calls(
            model, inputs, chunk_size, predicting.options_json(version, alias, options)
        )
        with Bar(len(inputs), "Predicting", enabled=progress) as bar:

            def run(call: Call[list[predicting.Outcome]]) -> list[predicting.Outcome]:
                answers = self._call(call)
                bar.advance(len(answers))
                return answers

            with ThreadPoolExecutor(max(1, min(concurrency, len(calls)))) as pool:
                chunks = list(pool.map(run, calls))
        outcomes = predicting.settle((o for chunk in chunks for o in chunk), errors == "raise")
        return predicting.frame_of(outcomes, rows) if predicting.is_frame(rows) else outcomes

    def train(
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
    ) -> TrainingJob:
        """Queue a training job on ``dataset`` (a path the service reads, ``dataset://name``, or an uploaded
        ``Dataset``); ``training`` takes ``epochs``, ``batch_size``, ``learning_rate``, ``seed``."""
        body = ops.training_body(
            dataset, target, algorithm, params, features, format, validation_split, resources, training
        )
        return TrainingJob(self, self._call(ops.train(model, body)))


__all__ = ["Client", "Prediction", "TrainingJob"]
