"""What a reference resolves to for serving: the version, the form it is served in (native or its
compiled ONNX form) and the input schema its callers are checked against. Pure functions of the
model and version rows, so the HTTP metadata and the prediction path agree without loading anything."""

from __future__ import annotations

from dataclasses import dataclass

from aiservice.domain.models import Model, ModelVersion
from aiservice.domain.schemas import InputSchema, TabularSchema, derived_schema, parse_input_schema


@dataclass(frozen=True)
class Route:
    """What a reference resolved to: the version, whether its tenant accepts pickle, and the form
    (native or onnx) it is served in."""

    model: Model
    version: ModelVersion
    allow_pickle: bool
    form: str


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
