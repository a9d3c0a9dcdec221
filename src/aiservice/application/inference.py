"""The dataplane: predictions and raw tensors for any transport (``/predict``, ``/batch-predict``, the
Open Inference Protocol), composed of the serving parts: a reference is resolved (``VersionRouter``),
the version loaded once into the cache (``ModelLoader``), the input checked against the model's schema,
run through the adaptive batcher, and the answer shaped for callers (``results``).

The hot path touches no database and no disk once a version is resolved and loaded: resolutions
are remembered (and forgotten when an event says the model changed) and models stay in the cache.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from collections.abc import Callable
from concurrent.futures import Executor
from contextlib import AbstractAsyncContextManager
from typing import Any, Protocol

import numpy as np

from aiservice.application.experimenting.traffic import ExperimentTraffic
from aiservice.application.payload_logging.ports import NO_PAYLOAD_LOG, PayloadLog
from aiservice.application.ports import ArtifactStore, Prediction, Runtime, SpanValue, Tracer
from aiservice.application.serving.cache import CacheEntry, CacheStats, ModelCache
from aiservice.application.serving.inputs import ImageDecoder, ServingModel, labels_of, to_rows
from aiservice.application.serving.loading import ModelLoader, RuntimeProvider, tenant_of
from aiservice.application.serving.results import PredictionResult, PredictOptions, shaped
from aiservice.application.serving.routing import Route, VersionRouter, serving_form
from aiservice.application.tracing import NO_TRACER
from aiservice.application.versions import ModelVersions
from aiservice.domain.errors import DomainError, InvalidInput, PredictionFailed, Unavailable
from aiservice.domain.models import Framework, Model, ModelVersion
from aiservice.domain.schemas import ImageSchema
from aiservice.domain.tenancy import Permission, Principal

__all__ = ["InferenceService", "PredictOptions", "PredictionResult"]


class InferenceMetrics(Protocol):
    def prediction(self, model: str, version: int, outcome: str, duration_ms: float) -> None: ...
    def batch(self, requests: int, rows: int) -> None: ...
    def cache(self, stats: CacheStats, models: int, loaded_bytes: int) -> None: ...
    def cache_hit(self) -> None: ...


PredictionLog = Callable[[str, str, float, float | None], None]
"""Writes the prediction log line: (model id, tenant id, duration in ms, confidence or None)."""


class InferenceService:
    def __init__(
        self,
        versions: ModelVersions,
        store: ArtifactStore,
        runtimes: RuntimeProvider,
        executor: Executor,
        metrics: InferenceMetrics,
        resident_bytes: Callable[[], int],
        images: ImageDecoder | None = None,
        max_models: int = 10,
        max_memory_bytes: int = 2 * 1024**3,
        max_batch_size: int = 1000,
        max_batch_rows: int = 32,
        max_batch_delay_s: float = 0.002,
        batch_workers: int = 1,
        timeout_s: float = 30.0,
        devices: dict[Framework, str] | None = None,
        loaded_model_limit: Callable[[str], int | None] = lambda tenant_id: None,
        tracer: Tracer = NO_TRACER,
        prediction_log: PredictionLog | None = None,
        prediction_log_rate: float = 0.0,
        model_threads: int | None = None,
        payload_log: PayloadLog = NO_PAYLOAD_LOG,
        experiments: ExperimentTraffic | None = None,
    ) -> None:
        """``loaded_model_limit`` gives a tenant's ``maxLoadedModels`` (None: no limit); it is asked
        on a cold load only, never on a cache hit. ``model_threads``: the threads a model's framework
        may use when its configuration names none (None: the framework's default, every core)."""
        self.timeout_s = timeout_s
        self._tracer = tracer
        self._prediction_log = prediction_log if prediction_log_rate > 0 else None
        self._prediction_log_rate = prediction_log_rate
        self._payload_log = payload_log  # a model's sampled inputs and outputs, when its policy says so
        self.experiments = experiments  # routes a bare model's predictions by its running experiment
        self._runtimes = runtimes
        self._executor = executor
        self._metrics = metrics
        self._images = images
        self.max_batch_size = max_batch_size  # inputs one /batch-predict request may hold
        self.router = VersionRouter(versions)
        self.loader = ModelLoader(
            store,
            runtimes,
            executor,
            metrics,
            resident_bytes,
            max_batch_rows=max_batch_rows,
            max_batch_delay_s=max_batch_delay_s,
            batch_workers=batch_workers,
            devices=devices,
            loaded_model_limit=loaded_model_limit,
            tracer=tracer,
            model_threads=model_threads,
        )
        self.cache: ModelCache[ServingModel] = ModelCache(
            max_models,
            max_memory_bytes,
            on_evict=self.loader.closed,
            on_change=metrics.cache,
            on_hit=metrics.cache_hit,
        )

    def invalidate(self, tenant_id: str, model_id: str | None = None) -> None:
        """Forget resolutions of a model (or a whole tenant) after an event says it changed."""
        self.router.invalidate(tenant_id, model_id)

    def loaded_models(self, tenant_id: str) -> int:
        """How many of the tenant's versions this replica's cache holds."""
        return self.cache.count(lambda key: tenant_of(key) == tenant_id)

    @staticmethod
    def _key(principal: Principal, route: Route) -> tuple[str, str, int, str]:
        """Cache key; the serving form is part of it, so a compiled form replaces the native one."""
        return (principal.tenant_id, route.model.id, route.version.version, route.form)

    def _entry(
        self, principal: Principal, route: Route, *, explicit: bool = False
    ) -> AbstractAsyncContextManager[CacheEntry[ServingModel]]:
        """The cache entry of ``route``'s version, loaded on a miss, pinned while the block runs."""
        return self.cache.use(
            self._key(principal, route), lambda: self.loader.load(self.cache, route, explicit=explicit)
        )

    # -- loading -------------------------------------------------------------------------------

    async def load(self, principal: Principal, ident: str, number: int) -> tuple[ServingModel, int]:
        """Warm a version into the cache. It changes nothing users see but costs memory: writers only."""
        principal.require(Permission.VERSION_WRITE)
        route = await self.router.resolve(principal, ident, f":{number}")
        async with self._entry(principal, route, explicit=True) as entry:
            loaded = entry.value, entry.bytes
        # Callers mostly predict by bare name next: resolve it now so that first predict finds the
        # route as warm as the model.
        with contextlib.suppress(DomainError):
            await self.router.resolve(principal, ident, "")
        return loaded

    async def unload(self, principal: Principal, ident: str, number: int) -> bool:
        principal.require(Permission.VERSION_WRITE)
        route = await self.router.resolve(principal, ident, f":{number}")
        return await self.cache.unload(self._key(principal, route))

    # -- raw tensors (the Open Inference Protocol) ---------------------------------------------

    async def describe(self, principal: Principal, ident: str, selector: str = "") -> Route:
        """The version a reference serves, with its stored signature and what is derived from it;
        loads nothing."""
        return await self.router.resolve(principal, ident, selector)

    def require_runtime(self, framework: Framework) -> Runtime:
        """The runtime serving ``framework``; ``Unavailable`` when it is missing or cannot import."""
        return self._runtimes.get(framework)

    def is_loaded(self, principal: Principal, model: Model, version: ModelVersion) -> bool:
        return self._key(principal, Route(model, version, False, serving_form(model, version))) in self.cache

    async def infer_array(
        self, principal: Principal, route: Route, rows: np.ndarray, *, observe: bool = True
    ) -> tuple[ServingModel, Prediction]:
        """Run an already-shaped batch (rows first) through the cache and the batcher, on the version
        ``route`` (from ``describe``) names: the one the batch was shaped for. ``observe=False`` (an
        experiment's shadow copy): not written to the payload log."""
        started = time.perf_counter()
        outcome = "error"
        try:
            async with self._entry(principal, route) as entry:
                prediction = await self._run(entry.value, rows, None)
            outcome = "success"
            latency = (time.perf_counter() - started) * 1000
            if observe:
                batch = len(rows) > 1
                self._payload_log.offer(
                    principal.tenant_id, entry.value, rows, range(len(rows)), prediction, latency, batch
                )
            return entry.value, prediction
        finally:
            self._metrics.prediction(
                route.model.name, route.version.version, outcome, (time.perf_counter() - started) * 1000
            )

    def labels_for(self, serving: ServingModel, values: np.ndarray) -> list[Any]:
        """Caller-facing labels for a column of native predictions."""
        return labels_of(serving, values)

    # -- predictions ---------------------------------------------------------------------------

    async def predict(
        self, principal: Principal, ident: str, payload: Any, options: PredictOptions
    ) -> PredictionResult:
        results = await self.predict_many(principal, ident, [payload], options, where="input", fail_fast=True)
        result = results[0]
        assert isinstance(result, PredictionResult)
        return result

    async def predict_many(
        self,
        principal: Principal,
        ident: str,
        payloads: list[Any],
        options: PredictOptions,
        *,
        where: str = "inputs",
        fail_fast: bool = False,
        chunk: int | None = None,
        observe: bool = True,
    ) -> list[PredictionResult | DomainError]:
        """One result per payload, in order. A bad payload fails alone unless ``fail_fast``.
        ``observe=False`` (an experiment's shadow copy): no experiment routing, no payload log."""
        started = time.perf_counter()
        route = await self.router.resolve(principal, ident, options.selector())
        traffic = self.experiments if observe else None
        assignment = None
        if traffic is not None:
            assignment = traffic.assign(principal.tenant_id, route.model.id, ident, options, payloads)
        if assignment is not None:
            route = await self.router.resolve(principal, ident, assignment.selector)
        outcome = "error"
        try:
            async with self._entry(principal, route) as entry:
                serving = entry.value
                rows, errors = await self._rows_off_loop(serving, payloads, where, fail_fast)
                good = [i for i in range(len(payloads)) if i not in errors]
                prediction = await self._run(serving, rows, chunk) if good else None
                if prediction is not None and self._prediction_log is not None:
                    self._log_sampled(principal, serving, prediction, started)
                importance = (
                    await self._explain(serving, rows)
                    if good and options.include_feature_importance
                    else None
                )
            latency = round((time.perf_counter() - started) * 1000, 3)
            results = shaped(serving, len(payloads), errors, prediction, importance, options, latency)
            if traffic is not None and assignment is not None:
                traffic.observed(
                    self, principal, ident, payloads, options, where, assignment, results, latency
                )
            # a single ``input`` is logged by its request id, a batch by row
            if prediction is not None and observe:
                self._payload_log.offer(
                    principal.tenant_id, serving, payloads, good, prediction, latency, where != "input"
                )
            outcome = "success" if not errors else ("partial" if good else "invalid")
            return results
        except InvalidInput:
            outcome = "invalid"
            raise
        except Exception:
            if traffic is not None and assignment is not None:
                traffic.failed(assignment, (time.perf_counter() - started) * 1000)
            raise
        finally:
            self._metrics.prediction(
                route.model.name, route.version.version, outcome, (time.perf_counter() - started) * 1000
            )

    async def _rows_off_loop(
        self, serving: ServingModel, payloads: list[Any], where: str, fail_fast: bool
    ) -> tuple[np.ndarray, dict[int, DomainError]]:
        """Images decode in a worker thread; everything else is cheap enough for the loop."""
        if isinstance(serving.input_schema, ImageSchema):
            loop = asyncio.get_running_loop()
            return await loop.run_in_executor(self._executor, self._rows, serving, payloads, where, fail_fast)
        return self._rows(serving, payloads, where, fail_fast)

    def _rows(
        self, serving: ServingModel, payloads: list[Any], where: str, fail_fast: bool
    ) -> tuple[np.ndarray, dict[int, DomainError]]:
        paths = [where] if len(payloads) == 1 else [f"{where}.{i}" for i in range(len(payloads))]
        if len(payloads) == 1 or fail_fast:
            return to_rows(serving, payloads, paths, self._images), {}
        try:  # the common case: every item is good, checked in one pass
            return to_rows(serving, payloads, paths, self._images), {}
        except InvalidInput:
            pass  # find the bad items one by one, so only they fail
        errors: dict[int, DomainError] = {}
        arrays = []
        for i, payload in enumerate(payloads):
            try:
                arrays.append(to_rows(serving, [payload], [f"{where}.{i}"], self._images))
            except InvalidInput as exc:
                errors[i] = exc
        if not arrays:
            return np.empty((0,)), errors
        return np.concatenate(arrays), errors

    def _log_sampled(
        self, principal: Principal, serving: ServingModel, prediction: Prediction, started: float
    ) -> None:
        """The prediction log line, for a ``prediction_log_rate`` fraction of calls."""
        if self._prediction_log is None or random.random() >= self._prediction_log_rate:
            return
        probs = prediction.probabilities
        confidence = float(np.max(probs[0])) if probs is not None and len(probs) else None
        duration = round((time.perf_counter() - started) * 1000, 3)
        self._prediction_log(serving.model.id, principal.tenant_id, duration, confidence)

    async def _run(self, serving: ServingModel, rows: np.ndarray, chunk: int | None) -> Prediction:
        """The model's answer, within the time limit; a model's own failure becomes a clear problem."""
        attributes: dict[str, SpanValue] = {
            "model.id": serving.model.id,
            "model.version": serving.version.version,
            "rows": len(rows),
        }
        with self._tracer.span("model.predict", attributes):
            return await self._run_timed(serving, rows, chunk)

    async def _run_timed(self, serving: ServingModel, rows: np.ndarray, chunk: int | None) -> Prediction:
        try:
            async with asyncio.timeout(self.timeout_s):  # no extra task per call, unlike wait_for
                return await self._run_chunks(serving, rows, chunk)
        except TimeoutError:
            raise Unavailable(
                f"The model did not answer within {self.timeout_s:g} s.", code="prediction-timeout"
            ) from None
        except DomainError:
            raise
        except Exception as exc:
            # Frameworks put the specific cause last (TorchScript prefixes a generic banner).
            cause = ([line for line in str(exc).splitlines() if line.strip()] or [type(exc).__name__])[-1]
            raise PredictionFailed(f"The model failed on this input: {cause.strip()[:300]}") from exc

    async def _run_chunks(self, serving: ServingModel, rows: np.ndarray, chunk: int | None) -> Prediction:
        if chunk is None or len(rows) <= chunk:
            return await serving.batcher.submit(rows)
        parts = await asyncio.gather(
            *(serving.batcher.submit(rows[i : i + chunk]) for i in range(0, len(rows), chunk))
        )
        probabilities = [p.probabilities for p in parts]
        return Prediction(
            values=np.concatenate([p.values for p in parts]),
            probabilities=None if probabilities[0] is None else np.concatenate(probabilities),  # type: ignore[arg-type]
        )

    async def _explain(self, serving: ServingModel, rows: np.ndarray) -> dict[str, Any] | None:
        loop = asyncio.get_running_loop()
        attributions = await loop.run_in_executor(self._executor, serving.loaded.explain, rows)
        if attributions is None:
            return None
        return {"method": attributions.method, "values": attributions.values}
