"""What a loaded version needs to answer: its model, runtime and batcher, and the conversion of
callers' inputs into arrays (and of the model's labels back into callers' names)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from aiservice.application.ports import LoadedModel
from aiservice.application.serving.batching import AdaptiveBatcher
from aiservice.domain.errors import FieldError, InvalidInput, Unavailable
from aiservice.domain.models import Model, ModelVersion
from aiservice.domain.schemas import (
    ImageSchema,
    InputSchema,
    TabularSchema,
    TensorSchema,
    TextSchema,
    feature_vectors,
    names_its_classes,
    parse_output_schema,
    tensor_input,
    text_input,
)
from aiservice.domain.signature import Signature
from aiservice.domain.tabular import TabularPlan


class ImageDecoder(Protocol):
    def decode(
        self, data: Any, formats: tuple[str, ...], max_pixels: int, configuration: dict[str, Any], where: str
    ) -> np.ndarray:
        """One image as a float32 array shaped as the model's configuration declares."""
        ...


@dataclass
class ServingModel:
    """A loaded version with everything a prediction needs, computed once at load."""

    model: Model
    version: ModelVersion
    loaded: LoadedModel
    batcher: AdaptiveBatcher
    input_schema: InputSchema | None  # the model's declared schema, else the one its version's columns give
    labels: tuple[Any, ...] | None  # what callers see: outputSchema.classes, else the model's own
    class_index: dict[Any, int] = field(default_factory=dict)
    plan: TabularPlan | None = None  # named features -> the model's columns, for a tabular schema
    derived: bool = False  # the schema is the version's own (the model declares none)
    form: str = "native"  # native, or onnx: the form of the version that answers

    @property
    def feature_names(self) -> list[str]:
        """Names in the model's column order (the order of its attributions)."""
        if self.plan is not None:
            return self.plan.model_names
        names = self.loaded.signature.feature_names
        n = self.loaded.signature.n_features or 0
        return list(names) if names else [f"f{i}" for i in range(n)]


def caller_labels(model: Model, version: ModelVersion, signature: Signature) -> tuple[Any, ...] | None:
    """The labels callers see, by the model's class position: outputSchema.classes, else a trained
    version's configured classes (where its runtime knows indices only), else the model's own.

    A model that names its classes itself (text labels, as a classifier fitted on a column of names
    does) answers those names: declared classes that are the same names, in whatever order, are not a
    renaming by position (``signature_mismatches`` refuses other names at upload)."""
    declared = parse_output_schema(model.output_schema)
    own = signature.classes
    if declared is not None and own is not None and names_its_classes(own) and set(own) == set(declared):
        return own
    if declared is not None:
        return declared
    configured = version.serving_configuration(model).get("classes")
    if isinstance(configured, list) and len(configured) == len(signature.classes or ()):
        return tuple(configured)
    return signature.classes


def label_of(serving: ServingModel, value: Any) -> Any:
    native = value.item() if hasattr(value, "item") and getattr(value, "ndim", 0) == 0 else value
    if isinstance(native, np.ndarray):
        return native.tolist()
    if serving.labels is not None and serving.class_index:
        index = serving.class_index.get(native)
        if index is not None and index < len(serving.labels):
            return serving.labels[index]
    return native


def labels_of(serving: ServingModel, values: np.ndarray) -> list[Any]:
    """``label_of`` of each row of ``values``: a column of numbers is read out in one ``tolist``."""
    if values.ndim != 1 or values.dtype == object:
        return [label_of(serving, v) for v in values]
    natives: list[Any] = values.tolist()
    index, labels = serving.class_index, serving.labels
    if labels is None or not index:
        return natives
    return [labels[i] if (i := index.get(v)) is not None and i < len(labels) else v for v in natives]


def _vectors(payloads: list[Any]) -> bool:
    """``{"features": [...]}`` objects: what a model that declares no schema took before its version's
    own columns gave it one; still read, positionally in the model's column order."""
    return all(isinstance(p, dict) and p.keys() == {"features"} for p in payloads)


def to_rows(
    serving: ServingModel, payloads: list[Any], paths: list[str], images: ImageDecoder | None
) -> np.ndarray:
    schema = serving.input_schema
    where = paths[0] if len(paths) == 1 else paths[0].rsplit(".", 1)[0]
    if serving.plan is not None and not (serving.derived and _vectors(payloads)):
        return serving.plan.rows(payloads, where)
    if schema is None or isinstance(schema, TabularSchema):
        return feature_vectors(payloads, serving.loaded.signature, where)
    values = []
    for payload, path in zip(payloads, paths, strict=True):
        if not isinstance(payload, dict) or schema.name not in payload:
            raise InvalidInput(
                f"{path}.{schema.name} is required.", errors=[FieldError(f"{path}.{schema.name}", "required")]
            )
        extra = sorted(set(payload) - {schema.name})
        if extra:
            raise InvalidInput(
                f"Unknown input fields: {', '.join(extra)}.",
                errors=[FieldError(f"{path}.{n}", "unknown field") for n in extra],
            )
        values.append(payload[schema.name])
    if isinstance(schema, TensorSchema):
        return tensor_input(schema, values, where)
    if isinstance(schema, TextSchema):
        return text_input(schema, values, where)
    if isinstance(schema, ImageSchema):
        if images is None:
            raise Unavailable("No image decoder is configured in this service.", code="unsupported-input")
        configuration = serving.version.serving_configuration(serving.model)
        return np.stack(
            [
                images.decode(
                    value, schema.formats, schema.max_pixels, configuration, f"{path}.{schema.name}"
                )
                for value, path in zip(values, paths, strict=True)
            ]
        )
    raise AssertionError(f"unhandled input schema {schema!r}")
