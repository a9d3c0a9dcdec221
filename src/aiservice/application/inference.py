"""Predictions: resolve the version from memory, load it once into the cache, check the input against
the model's schema, run it through the adaptive batcher, and shape the answer.

The hot path touches no database and no disk once a version is resolved and loaded: resolutions
are remembered (and forgotten when an event says the model changed) and models stay in the cache.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import gc
import logging
import random
import time
from collections.abc import Callable, Hashable
from concurrent.futures import Executor
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from aiservice.application.ports import (
    ArtifactStore,
    LoadedModel,
    LoadSpec,
    Prediction,
    Runtime,
    SpanValue,
    Tracer,
)
from aiservice.application.serving.batching import AdaptiveBatcher
from aiservice.application.serving.cache import CacheStats, ModelCache
from aiservice.application.serving.inputs import (
    ImageDecoder,
    ServingModel,
    caller_labels,
    labels_of,
    to_rows,
)
from aiservice.application.serving.routing import Route, effective_input_schema, serving_form
from aiservice.application.tracing import NO_TRACER
from aiservice.application.versions import ModelVersions
from aiservice.domain.errors import DomainError, InvalidInput, PredictionFailed, QuotaExceeded, Unavailable
from aiservice.domain.models import Framework, Model, ModelVersion
from aiservice.domain.schemas import (
    ImageSchema,
    TabularSchema,
)
from aiservice.domain.tabular import TabularPlan
from aiservice.domain.tenancy import Permission, Principal, Quota

ROUTE_TTL_S = 5.0
log = logging.getLogger(__name__)


class RuntimeProvider(Protocol):
    def get(self, framework: Framework) -> Runtime: ...


class InferenceMetrics(Protocol):
    def prediction(self, model: str, version: int, outcome: str, duration_ms: float) -> None: ...
    def batch(self, requests: int, rows: int) -> None: ...
    def cache(self, stats: CacheStats, models: int, loaded_bytes: int) -> None: ...
    def cache_hit(self) -> None: ...


PredictionLog = Callable[[str, str, float, float | None], None]
"""Writes the prediction log line: (model id, tenant id, duration in ms, confidence or None)."""


@dataclass(frozen=True)
class PredictOptions:
    include_confidence: bool = False
    include_feature_importance: bool = False
    version: int | None = None
    alias: str | None = None

    def selector(self) -> str:
        if self.version is not None:
            return f":{self.version}"
        return f"@{self.alias}" if self.alias else ""


@dataclass
class PredictionResult:
    prediction: Any
    model_id: str
    version: int
    latency_ms: float
    form: str = "native"  # the form of the version that answered: native or onnx
    confidence: float | None = None
    probabilities: dict[str, float] | None = None
    feature_importance: dict[str, Any] | None = None


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
    ) -> None:
        """``loaded_model_limit`` gives a tenant's ``maxLoadedModels`` (None: no limit); it is asked
        on a cold load only, never on a cache hit. ``model_threads``: the threads a model's framework
        may use when its configuration names none (None: the framework's default, every core)."""
        self.timeout_s = timeout_s
        self._tracer = tracer
        self._prediction_log = prediction_log if prediction_log_rate > 0 else None
        self._prediction_log_rate = prediction_log_rate
        self._loaded_model_limit = loaded_model_limit
        self._devices = devices or {}
        self._model_threads = model_threads
        self._versions = versions
        self._store = store
        self._runtimes = runtimes
        self._executor = executor
        self._metrics = metrics
        self._resident_bytes = resident_bytes
        self._images = images
        self.max_batch_size = max_batch_size  # inputs one /batch-predict request may hold
        self.max_batch_rows = max_batch_rows  # rows the adaptive batcher merges into one model call
        self._batch_delay = max_batch_delay_s
        self._batch_workers = batch_workers
        self._routes: dict[tuple[str, str, str], tuple[float, Route]] = {}
        self.cache: ModelCache[ServingModel] = ModelCache(
            max_models,
            max_memory_bytes,
            on_evict=self._closed,
            on_change=metrics.cache,
            on_hit=metrics.cache_hit,
        )

    # -- routing -------------------------------------------------------------------------------

    def invalidate(self, tenant_id: str, model_id: str | None = None) -> None:
        """Forget resolutions of a model (or a whole tenant) after an event says it changed."""
        for key, (_, route) in list(self._routes.items()):
            if key[0] == tenant_id and (model_id is None or route.model.id == model_id):
                self._routes.pop(key, None)

    async def _route(self, principal: Principal, ident: str, selector: str) -> Route:
        principal.require(Permission.PREDICT)
        key = (principal.tenant_id, ident, selector)
        cached = self._routes.get(key)
        if cached is not None and cached[0] > time.monotonic() and principal.sees_model(cached[1].model.id):
            return cached[1]
        loop = asyncio.get_running_loop()
        model, version, allow_pickle = await loop.run_in_executor(
            None, self._versions.serving_target, principal, ident + selector
        )
        route = Route(model, version, allow_pickle, serving_form(model, version))
        self._routes[key] = (time.monotonic() + ROUTE_TTL_S, route)
        return route

    # -- loading -------------------------------------------------------------------------------

    def loaded_models(self, tenant_id: str) -> int:
        """How many of the tenant's versions this replica's cache holds."""
        return self.cache.count(lambda key: _tenant_of(key) == tenant_id)

    async def _make_room(self, tenant_id: str, explicit: bool) -> None:
        """Keep the tenant within ``maxLoadedModels`` in this replica's cache: a prediction that needs a
        cold model evicts the tenant's least recently used idle one; an explicit load is refused."""
        loop = asyncio.get_running_loop()
        limit = await loop.run_in_executor(None, self._loaded_model_limit, tenant_id)
        if limit is None:
            return

        def mine(key: Hashable) -> bool:
            return _tenant_of(key) == tenant_id

        while (current := self.cache.count(mine)) >= limit:
            if explicit or not await self.cache.evict_oldest(mine):
                raise QuotaExceeded(
                    f"Tenant {tenant_id!r} has {current} models loaded, its {Quota.LOADED_MODELS} limit "
                    + f"is {limit}{'; unload one first' if explicit and limit else ''}.",
                    extra={"quota": str(Quota.LOADED_MODELS), "limit": limit, "current": current},
                )

    async def _load(self, route: Route, *, explicit: bool = False) -> tuple[ServingModel, int]:
        model, version = route.model, route.version
        await self._make_room(model.tenant_id, explicit)
        compiled = version.serving.onnx if route.form == "onnx" else None
        if compiled is not None:  # the checked, faster ONNX form of this version
            framework = Framework.ONNX
            spec = LoadSpec(
                Framework.ONNX,
                "model.onnx",
                configuration=self._threaded(compiled.configuration),
                device=self._devices.get(model.framework, "cpu"),  # its own framework's (CUDA provider)
            )
            key, digest, size = compiled.key, compiled.digest, compiled.size_bytes
        else:
            framework = model.framework
            spec = LoadSpec(
                framework=model.framework,
                filename=version.artifact.filename,
                allow_pickle=route.allow_pickle,
                configuration=self._threaded(version.serving_configuration(model)),
                device=self._devices.get(model.framework, "cpu"),
            )
            key, digest, size = version.artifact.key, version.artifact.digest, version.artifact.size_bytes
        loop = asyncio.get_running_loop()

        def load() -> tuple[LoadedModel, int, float | None]:
            # Off the event loop: the runtime's first use imports its framework (seconds for sklearn).
            runtime = self._runtimes.get(framework)
            path = self._store.local_path(key, digest)
            before = self._resident_bytes()
            loaded = runtime.load(path, spec)
            call_s = _warm_up(loaded)
            grown = self._resident_bytes() - before
            # A loaded model (and a freshly imported framework) is hundreds of thousands of long-lived
            # objects; moved out of the collector's sight, full collections stay short.
            gc.freeze()
            return loaded, grown, call_s

        attributes: dict[str, SpanValue] = {
            "model.id": model.id,
            "model.version": version.version,
            "model.framework": framework.value,
        }
        with self._tracer.span("model.load", attributes):
            # The worker thread runs in this context, so the artifact read is a child of the load.
            loaded, grown, call_s = await loop.run_in_executor(None, contextvars.copy_context().run, load)
        serving = self._serving_model(route, loaded, call_s)
        return serving, max(grown, size)

    @staticmethod
    def _key(principal: Principal, route: Route) -> tuple[str, str, int, str]:
        """Cache key; the serving form is part of it, so a compiled form replaces the native one."""
        return (principal.tenant_id, route.model.id, route.version.version, route.form)

    def _serving_model(self, route: Route, loaded: LoadedModel, call_s: float | None = None) -> ServingModel:
        model, version = route.model, route.version
        signature = loaded.signature
        labels = caller_labels(model, version, signature)
        schema = effective_input_schema(model, version)
        derived = not model.input_schema
        stored = version.signature or signature  # the native form's columns, checked at upload
        return ServingModel(
            model=model,
            version=version,
            loaded=loaded,
            batcher=AdaptiveBatcher(
                loaded.predict,
                self._executor,
                max_batch_size=self.max_batch_rows,
                max_delay_s=self._batch_delay,
                workers=self._batch_workers,
                on_batch=self._metrics.batch,
                first_call_s=call_s,
            ),
            input_schema=schema,
            labels=labels,
            class_index={c: i for i, c in enumerate(signature.classes or ())},
            plan=TabularPlan.bind(schema, stored, version.version)
            if isinstance(schema, TabularSchema)
            else None,
            form=route.form,
            derived=derived,
        )

    def _threaded(self, configuration: dict[str, Any]) -> dict[str, Any]:
        """A model's own ``numThreads`` wins; else this process's share of the cores, when several
        worker processes share them (each framework's pool would otherwise claim every core)."""
        if self._model_threads is None or "numThreads" in configuration:
            return configuration
        return {**configuration, "numThreads": self._model_threads}

    @staticmethod
    async def _closed(serving: ServingModel) -> None:
        await serving.batcher.close()

    async def load(self, principal: Principal, ident: str, number: int) -> tuple[ServingModel, int]:
        """Warm a version into the cache. It changes nothing users see but costs memory: writers only."""
        principal.require(Permission.VERSION_WRITE)
        route = await self._route(principal, ident, f":{number}")
        async with self.cache.use(
            self._key(principal, route), lambda: self._load(route, explicit=True)
        ) as entry:
            loaded = entry.value, entry.bytes
        # Callers mostly predict by bare name next: resolve it now so that first predict finds the
        # route as warm as the model.
        with contextlib.suppress(DomainError):
            await self._route(principal, ident, "")
        return loaded

    async def unload(self, principal: Principal, ident: str, number: int) -> bool:
        principal.require(Permission.VERSION_WRITE)
        route = await self._route(principal, ident, f":{number}")
        return await self.cache.unload(self._key(principal, route))

    # -- raw tensors (the Open Inference Protocol) ---------------------------------------------

    async def describe(
        self, principal: Principal, ident: str, selector: str = ""
    ) -> tuple[Model, ModelVersion]:
        """The version a reference serves, with its stored signature; loads nothing."""
        route = await self._route(principal, ident, selector)
        return route.model, route.version

    def require_runtime(self, framework: Framework) -> Runtime:
        """The runtime serving ``framework``; ``Unavailable`` when it is missing or cannot import."""
        return self._runtimes.get(framework)

    def is_loaded(self, principal: Principal, model: Model, version: ModelVersion) -> bool:
        return self._key(principal, Route(model, version, False, serving_form(model, version))) in self.cache

    async def infer_array(
        self, principal: Principal, ident: str, selector: str, rows: np.ndarray
    ) -> tuple[ServingModel, Prediction]:
        """Run an already-shaped batch (rows first) through the cache and the batcher."""
        started = time.perf_counter()
        route = await self._route(principal, ident, selector)
        outcome = "error"
        try:
            async with self.cache.use(self._key(principal, route), lambda: self._load(route)) as entry:
                prediction = await self._run(entry.value, rows, None)
            outcome = "success"
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
    ) -> list[PredictionResult | DomainError]:
        """One result per payload, in order. A bad payload fails alone unless ``fail_fast``."""
        started = time.perf_counter()
        route = await self._route(principal, ident, options.selector())
        outcome = "error"
        try:
            async with self.cache.use(self._key(principal, route), lambda: self._load(route)) as entry:
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
            labels = labels_of(serving, prediction.values) if prediction is not None else []
            results: list[PredictionResult | DomainError] = []
            row = 0
            for i in range(len(payloads)):
                if i in errors:
                    results.append(errors[i])
                    continue
                results.append(
                    self._result(serving, prediction, labels[row], importance, row, options, latency)  # type: ignore[arg-type]
                )
                row += 1
            outcome = "success" if not errors else ("partial" if good else "invalid")
            return results
        except InvalidInput:
            outcome = "invalid"
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

    def _result(
        self,
        serving: ServingModel,
        prediction: Prediction,
        label: Any,
        importance: dict[str, Any] | None,
        row: int,
        options: PredictOptions,
        latency_ms: float,
    ) -> PredictionResult:
        result = PredictionResult(
            prediction=label,
            model_id=serving.model.id,
            version=serving.version.version,
            latency_ms=latency_ms,
            form=serving.form,
        )
        if prediction.probabilities is not None and options.include_confidence:
            probs = prediction.probabilities[row]
            classes = serving.labels or tuple(range(len(probs)))
            result.probabilities = {str(classes[c]): float(p) for c, p in enumerate(probs)}
            result.confidence = float(np.max(probs))
        if importance is not None:
            names = serving.feature_names
            values = importance["values"][row]
            result.feature_importance = {
                "method": importance["method"],
                "values": {names[i] if i < len(names) else f"f{i}": float(v) for i, v in enumerate(values)},
            }
        elif options.include_feature_importance:
            result.feature_importance = {
                "method": None,
                "values": {},
                "reason": "not supported for this model",
            }
        return result


def _tenant_of(key: Hashable) -> object:
    return key[0] if isinstance(key, tuple) else None


def _warm_up(loaded: LoadedModel) -> float | None:
    """Run one all-zero row through a freshly loaded model, as Triton's model warm-up does, so the
    first real request pays no first-call allocations; returns that call's duration, which the
    batcher uses to decide at once whether the model is fast enough to run inline."""
    inputs = loaded.signature.inputs
    if len(inputs) != 1 or inputs[0].dtype == "object" or any(d < 1 for d in inputs[0].shape[1:]):
        return None
    row = np.zeros((1, *inputs[0].shape[1:]), dtype=inputs[0].dtype)
    try:
        loaded.predict(row)  # the first call: allocations, lazy initialisation
        started = time.perf_counter()
        loaded.predict(row)
        return time.perf_counter() - started
    except Exception:  # a model may refuse zeros (a lookup table, say); it simply starts cold
        log.debug("warm-up call failed", exc_info=True)
        return None
