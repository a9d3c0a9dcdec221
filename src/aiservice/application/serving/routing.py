"""What a reference resolves to for serving: the version, the form it is served in (native or its
compiled ONNX form) and the input schema its callers are checked against. Pure functions of the
model and version rows, so the HTTP metadata and the prediction path agree without loading anything."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any, Protocol, TypeVar

from aiservice.domain.models import Model, ModelVersion
from aiservice.domain.schemas import InputSchema, TabularSchema, derived_schema, parse_input_schema
from aiservice.domain.tenancy import Permission, Principal

ROUTE_TTL_S = 5.0
T = TypeVar("T")


@dataclass(frozen=True)
class Route:
    """What a reference resolved to: the version, whether its tenant accepts pickle, and the form
    (native or onnx) it is served in. What callers' requests are read against (the input schema, a
    protocol's tensor specs) is derived once per resolution and kept here, not parsed per request."""

    model: Model
    version: ModelVersion
    allow_pickle: bool
    form: str
    _derived: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)

    @cached_property
    def input_schema(self) -> InputSchema | None:
        return effective_input_schema(self.model, self.version)

    def derived(self, name: str, make: Callable[[Route], T]) -> T:
        """``make(self)``, computed on first use and kept with the route (a protocol's view of it)."""
        if name not in self._derived:
            self._derived[name] = make(self)
        value: T = self._derived[name]
        return value


class ServingTargets(Protocol):
    def serving_target(self, principal: Principal, reference: str) -> tuple[Model, ModelVersion, bool]: ...


class VersionRouter:
    """Resolves references to routes and remembers them for ``ttl_s`` (or until an event says the model
    changed), so the hot path touches no database."""

    def __init__(self, targets: ServingTargets, ttl_s: float = ROUTE_TTL_S) -> None:
        self._targets = targets
        self._ttl_s = ttl_s
        self._routes: dict[tuple[str, str, str], tuple[float, Route]] = {}

    def invalidate(self, tenant_id: str, model_id: str | None = None) -> None:
        """Forget resolutions of a model (or a whole tenant)."""
        for key, (_, route) in list(self._routes.items()):
            if key[0] == tenant_id and (model_id is None or route.model.id == model_id):
                self._routes.pop(key, None)

    async def resolve(self, principal: Principal, ident: str, selector: str) -> Route:
        principal.require(Permission.PREDICT)
        key = (principal.tenant_id, ident, selector)
        cached = self._routes.get(key)
        if cached is not None and cached[0] > time.monotonic() and principal.sees_model(cached[1].model.id):
            return cached[1]
        loop = asyncio.get_running_loop()
        model, version, allow_pickle = await loop.run_in_executor(
            None, self._targets.serving_target, principal, ident + selector
        )
        route = Route(model, version, allow_pickle, serving_form(model, version))
        self._routes[key] = (time.monotonic() + self._ttl_s, route)
        return route


def serving_form(model: Model, version: ModelVersion) -> str:
    """The compiled ONNX form where one was kept, except where callers may send missing values that
    it was found not to answer as the native model does: then the native form serves."""
    if not version.serving.serves_onnx:
        return "native"
    if version.serving.missing_values == "differ":
        schema = effective_input_schema(model, version)
        if isinstance(schema, TabularSchema) and any(f.nullable for f in schema.features):
            return "native"
    return "onnx"


def effective_input_schema(model: Model, version: ModelVersion) -> InputSchema | None:
    """The schema a version is served with: the model's declared one, else the one its own named
    columns give (derived at upload from the artifact), else none."""
    declared = parse_input_schema(model.input_schema, where="inputSchema")
    return declared if declared is not None else derived_schema(version.signature)
