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
    serving: ServingRecord = field(default_factory=lambda: ServingRecord())  # which form serves, and why
    lineage: JsonObject = field(default_factory=dict)  # where it came from: the training job, its datasets
    # What this artifact needs on top of the model's configuration to be read (a trained network's
    # task and classes, say); the model's own keys are the defaults.
    configuration: JsonObject = field(default_factory=dict)

    def serving_configuration(self, model: Model) -> JsonObject:
        return runtime_configuration(model, self.configuration)


@dataclass(frozen=True)
class CompiledForm:
    """The ONNX artifact the compile check kept for a version, and what its runtime reads it with."""

    key: str
    digest: str
    size_bytes: int
    configuration: JsonObject = field(default_factory=dict)

    def to_json(self) -> JsonObject:
        return {
            "key": self.key,
            "digest": self.digest,
            "sizeBytes": self.size_bytes,
            "configuration": self.configuration,
        }

    @classmethod
    def from_json(cls, data: JsonObject) -> CompiledForm:
        return cls(
            str(data["key"]),
            str(data["digest"]),
            int(data["sizeBytes"]),
            dict(data.get("configuration") or {}),
        )


@dataclass(frozen=True)
class ServingRecord:
    """Which form of a version serves (``native``, or ``onnx`` once the compile check kept a compiled
    form) and why. ``compiled``: the check has run (once per version); ``missing_values``: whether
    the ONNX form answers rows with missing values as the native one does (``same``, ``differ``,
    ``none``); ``report``: the rest of what the check measured (tolerance, differences, latencies),
    kept as it said it, for the API."""

    form: str = "native"
    reason: str = ""
    compiled: bool = False
    onnx: CompiledForm | None = None
    missing_values: str | None = None
    report: JsonObject = field(default_factory=dict)

    @property
    def serves_onnx(self) -> bool:
        return self.form == "onnx" and self.onnx is not None

    def to_json(self) -> JsonObject:
        """As stored: the check's report with the typed fields in their places."""
        data: JsonObject = {**self.report, "form": self.form, "reason": self.reason}
        if self.compiled:
            data["compiled"] = True
        if self.onnx is not None:
            data["onnx"] = self.onnx.to_json()
        if self.missing_values is not None:
            data["missingValues"] = self.missing_values
        return data

    @classmethod
    def from_json(cls, data: JsonObject) -> ServingRecord:
        report = {k: v for k, v in data.items() if k not in _SERVING_FIELDS}
        onnx = data.get("onnx")
        missing = data.get("missingValues")
        return cls(
            form=str(data.get("form", "native")),
            reason=str(data.get("reason", "")),
            compiled=bool(data.get("compiled", False)),
            onnx=CompiledForm.from_json(onnx) if isinstance(onnx, dict) else None,
            missing_values=None if missing is None else str(missing),
            report=report,
        )


_SERVING_FIELDS = frozenset({"form", "reason", "compiled", "onnx", "missingValues"})


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
