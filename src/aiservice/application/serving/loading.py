"""Loading a resolved version into the model cache: room is made within the tenant's quota, the
artifact is read and the framework imported off the event loop, the model is warmed with one row and
its memory measured, and everything a prediction needs is computed once (``ServingModel``)."""

from __future__ import annotations

import asyncio
import contextvars
import gc
import logging
import time
from collections.abc import Callable, Hashable
from concurrent.futures import Executor
from typing import Any, Protocol

import numpy as np

from aiservice.application.ports import ArtifactStore, LoadedModel, LoadSpec, Runtime, SpanValue, Tracer
from aiservice.application.serving.batching import AdaptiveBatcher
from aiservice.application.serving.cache import ModelCache
from aiservice.application.serving.inputs import ServingModel, caller_labels
from aiservice.application.serving.routing import Route
from aiservice.application.tracing import NO_TRACER
from aiservice.domain.errors import QuotaExceeded
from aiservice.domain.models import Framework
from aiservice.domain.schemas import TabularSchema
from aiservice.domain.tabular import TabularPlan
from aiservice.domain.tenancy import Quota

log = logging.getLogger(__name__)


class RuntimeProvider(Protocol):
    def get(self, framework: Framework) -> Runtime: ...


class BatchMetrics(Protocol):
    def batch(self, requests: int, rows: int) -> None: ...


def tenant_of(key: Hashable) -> object:
    """The tenant of a cache key (``InferenceService`` keys by tenant first)."""
    return key[0] if isinstance(key, tuple) else None


class ModelLoader:
    def __init__(
        self,
        store: ArtifactStore,
        runtimes: RuntimeProvider,
        executor: Executor,
        metrics: BatchMetrics,
        resident_bytes: Callable[[], int],
        *,
        max_batch_rows: int = 32,
        max_batch_delay_s: float = 0.002,
        batch_workers: int = 1,
        devices: dict[Framework, str] | None = None,
        loaded_model_limit: Callable[[str], int | None] = lambda tenant_id: None,
        tracer: Tracer = NO_TRACER,
        model_threads: int | None = None,
    ) -> None:
        """``loaded_model_limit`` gives a tenant's ``maxLoadedModels`` (None: no limit); it is asked
        on a cold load only. ``model_threads``: the threads a model's framework may use when its
        configuration names none (None: the framework's default, every core)."""
        self._store = store
        self._runtimes = runtimes
        self._executor = executor
        self._metrics = metrics
        self._resident_bytes = resident_bytes
        self.max_batch_rows = max_batch_rows  # rows the adaptive batcher merges into one model call
        self._batch_delay = max_batch_delay_s
        self._batch_workers = batch_workers
        self._devices = devices or {}
        self._loaded_model_limit = loaded_model_limit
        self._tracer = tracer
        self._model_threads = model_threads

    async def make_room(self, cache: ModelCache[ServingModel], tenant_id: str, explicit: bool) -> None:
        """Keep the tenant within ``maxLoadedModels`` in this replica's cache: a prediction that needs a
        cold model evicts the tenant's least recently used idle one; an explicit load is refused."""
        loop = asyncio.get_running_loop()
        limit = await loop.run_in_executor(None, self._loaded_model_limit, tenant_id)
        if limit is None:
            return

        def mine(key: Hashable) -> bool:
            return tenant_of(key) == tenant_id

        while (current := cache.count(mine)) >= limit:
            if explicit or not await cache.evict_oldest(mine):
                raise QuotaExceeded(
                    f"Tenant {tenant_id!r} has {current} models loaded, its {Quota.LOADED_MODELS} limit "
                    + f"is {limit}{'; unload one first' if explicit and limit else ''}.",
                    extra={"quota": str(Quota.LOADED_MODELS), "limit": limit, "current": current},
                )

    async def load(
        self, cache: ModelCache[ServingModel], route: Route, *, explicit: bool = False
    ) -> tuple[ServingModel, int]:
        """The version ``route`` names, loaded and warmed, and the memory it took (at least its size)."""
        model, version = route.model, route.version
        await self.make_room(cache, model.tenant_id, explicit)
        compiled = version.serving.onnx if route.form == "onnx" else None
        if compiled is not None:  # the checked, faster ONNX form of this version
            framework = Framework.ONNX
            spec = LoadSpec(
                Framework.ONNX,
                "model.onnx",
                configuration=self.threaded(compiled.configuration),
                device=self._devices.get(model.framework, "cpu"),  # its own framework's (CUDA provider)
            )
            key, digest, size = compiled.key, compiled.digest, compiled.size_bytes
        else:
            framework = model.framework
            spec = LoadSpec(
                framework=model.framework,
                filename=version.artifact.filename,
                allow_pickle=route.allow_pickle,
                configuration=self.threaded(version.serving_configuration(model)),
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
            call_s = warm_up(loaded)
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
        return self.serving_model(route, loaded, call_s), max(grown, size)

    def serving_model(self, route: Route, loaded: LoadedModel, call_s: float | None = None) -> ServingModel:
        """Everything a prediction of this version needs, computed once."""
        model, version = route.model, route.version
        signature = loaded.signature
        schema = route.input_schema
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
            labels=caller_labels(model, version, signature),
            class_index={c: i for i, c in enumerate(signature.classes or ())},
            plan=TabularPlan.bind(schema, stored, version.version)
            if isinstance(schema, TabularSchema)
            else None,
            form=route.form,
            derived=not model.input_schema,
        )

    def threaded(self, configuration: dict[str, Any]) -> dict[str, Any]:
        """A model's own ``numThreads`` wins; else this process's share of the cores, when several
        worker processes share them (each framework's pool would otherwise claim every core)."""
        if self._model_threads is None or "numThreads" in configuration:
            return configuration
        return {**configuration, "numThreads": self._model_threads}

    @staticmethod
    async def closed(serving: ServingModel) -> None:
        await serving.batcher.close()


def warm_up(loaded: LoadedModel) -> float | None:
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
