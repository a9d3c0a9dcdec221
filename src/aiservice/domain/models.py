"""The registry's entities: a model, its immutable versions, their stages and aliases."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any, ClassVar
from uuid import uuid4

from aiservice.domain.errors import FieldError, InvalidInput
from aiservice.domain.events import DomainEvent, ModelCreated, ModelDeleted, ModelUpdated
from aiservice.domain.signature import Signature

MAX_VERSION = 2**31 - 1  # version numbers are 32-bit: a larger one names no version and is refused

JsonObject = dict[str, Any]

# Names and aliases appear inside references (``name@alias``, ``name:3``), so they exclude ``@`` and ``:``.
MODEL_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
ALIAS_NAME = re.compile(r"^[a-z][a-z0-9_-]{0,63}$")
UUID_SHAPE = re.compile(r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$")


FRAMEWORK_NAME = re.compile(r"^[a-z][a-z0-9_-]{0,19}$")  # stored in a 20-character column


class Framework(str):
    """A framework's name as models store it ("sklearn", "xgboost", "lightgbm"...). Which names exist is
    for the installed runtime plugins to say: a new model's name is checked against them at the edge
    (``application/frameworks.py``), while a stored name whose plugin has gone still reads, and its
    versions answer 503 runtime-unavailable."""

    __slots__ = ()
    ONNX: ClassVar[Framework]  # the form compiled versions serve in, whatever their own framework

    def __new__(cls, name: str) -> Framework:
        if not FRAMEWORK_NAME.fullmatch(name):
            raise ValueError(
                f"{name!r} is not a framework name: use 1-20 lowercase letters, digits, '_', '-'"
            )
        return super().__new__(cls, name)

    @property
    def value(self) -> str:
        """The name as plain text (what callers of the former enum read)."""
        return str(self)


Framework.ONNX = Framework("onnx")


class Stage(StrEnum):
    NONE = "none"
    STAGING = "staging"
    PRODUCTION = "production"
    ARCHIVED = "archived"


RESERVED_ALIASES = frozenset({*(s.value for s in Stage), "latest"})


def check_model_name(name: str, field_name: str = "body.name") -> None:
    if not MODEL_NAME.fullmatch(name) or UUID_SHAPE.match(name):
        raise InvalidInput(
            f"Model name {name!r} is not valid: use 1-128 letters, digits, '.', '_' or '-', "
            "starting with a letter or digit, and not shaped like a UUID.",
            errors=[FieldError(field_name, "invalid model name")],
        )


def check_alias_name(alias: str, field_name: str = "path.alias") -> None:
    if not ALIAS_NAME.match(alias) or alias in RESERVED_ALIASES:
        raise InvalidInput(
            f"Alias {alias!r} is not valid: use 1-64 lowercase letters, digits, '_' or '-', starting "
            f"with a letter, and none of the reserved words {sorted(RESERVED_ALIASES)}.",
            errors=[FieldError(field_name, "invalid alias")],
        )


@dataclass
class Model:
    """A named model of one framework; its versions carry the artifacts."""

    tenant_id: str
    name: str
    framework: Framework
    created_at: datetime
    updated_at: datetime
    id: str = field(default_factory=lambda: str(uuid4()))
    description: str = ""
    category: str | None = None
    configuration: JsonObject = field(default_factory=dict)
    input_schema: JsonObject = field(default_factory=dict)
    output_schema: JsonObject = field(default_factory=dict)
    tags: list[str] = field(default_factory=list)
    latest_version: int | None = None
    created_by: str | None = None
    deleted_at: datetime | None = None
    events: list[DomainEvent] = field(default_factory=list, repr=False, compare=False)

    UPDATABLE = ("description", "tags", "input_schema", "output_schema", "configuration", "category")

    @classmethod
    def register(
        cls, *, tenant_id: str, name: str, framework: Framework, now: datetime, **rest: Any
    ) -> Model:
        check_model_name(name)
        model = cls(
            tenant_id=tenant_id, name=name, framework=framework, created_at=now, updated_at=now, **rest
        )
        model.events.append(
            ModelCreated(tenant_id=tenant_id, aggregate_id=model.id, name=name, framework=framework.value)
        )
        return model

    def update(self, changes: JsonObject, now: datetime) -> list[str]:
        """Apply the given fields; returns the names that really changed (an empty list is a no-op)."""
        changed = [
            name for name, value in changes.items() if name in self.UPDATABLE and getattr(self, name) != value
        ]
        for name in changed:
            setattr(self, name, changes[name])
        if changed:
            self.updated_at = now
            self.events.append(
                ModelUpdated(tenant_id=self.tenant_id, aggregate_id=self.id, changed_fields=changed)
            )
        return changed

    def delete(self, now: datetime) -> None:
        self.deleted_at = now
        self.updated_at = now
        self.events.append(ModelDeleted(tenant_id=self.tenant_id, aggregate_id=self.id, name=self.name))


@dataclass(frozen=True)
class ArtifactRef:
    """Where a version's bytes live and what they must hash to."""

    key: str
    digest: str  # hex SHA-256 of the bytes as uploaded
    size_bytes: int
    filename: str
    media_type: str


@dataclass
class ModelVersion:
    """Version N of a model: immutable once created, except for its stage."""

    tenant_id: str
    model_id: str
    version: int
    artifact: ArtifactRef
    created_at: datetime
    id: str = field(default_factory=lambda: str(uuid4()))
    description: str = ""
    metrics: JsonObject = field(default_factory=dict)
    params: JsonObject = field(default_factory=dict)
    source_run: str | None = None
    stage: Stage = Stage.NONE
    stage_changed_at: datetime | None = None
    created_by: str | None = None
    signature: Signature | None = None  # what the runtime reported when the upload was inspected
    serving: JsonObject = field(default_factory=dict)  # which form serves (native or compiled) and why
    lineage: JsonObject = field(default_factory=dict)  # where it came from: the training job, its datasets
    # What this artifact needs on top of the model's configuration to be read (a trained network's
    # task and classes, say); the model's own keys are the defaults.
    configuration: JsonObject = field(default_factory=dict)

    def serving_configuration(self, model: Model) -> JsonObject:
        return runtime_configuration(model, self.configuration)


def runtime_configuration(model: Model, own: JsonObject) -> JsonObject:
    """What a runtime reads a version with: the model's configuration, defaulting ``task`` to the
    model's category (classification, regression) and ``classes`` to its outputSchema's classes, so a
    network declared a classifier answers labels; a version's ``own`` keys come last."""
    defaults: JsonObject = {}
    if model.category in ("classification", "regression"):
        defaults["task"] = model.category
    classes = model.output_schema.get("classes")
    if isinstance(classes, list) and classes:
        defaults["classes"] = classes
    return {**defaults, **model.configuration, **own}


@dataclass(frozen=True)
class Alias:
    model_id: str
    name: str
    version: int
    updated_at: datetime
