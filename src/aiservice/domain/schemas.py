"""Input schemas: what callers send, declared per model (or derived from what a version takes).

Kinds: ``tabular`` (named features), ``tensor`` (a dtype and ONE SAMPLE's shape, without the batch
dimension, -1 for any size), ``text`` (strings with a maximum length) and ``image`` (decoded by an
adapter). A tabular feature is a ``number``, ``integer``, ``boolean``, ``category`` (one of ``values``)
or ``string`` (any text); ``nullable`` lets callers send ``null`` for it (a missing value, NaN to the
model), served only by versions that were found at upload to answer with it missing. A model without
a declared schema takes the one derived from its version's named columns, else
``{"features": [...]}`` sized by its runtime's signature. ``domain/tabular.py`` turns named features
into the model's columns.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from aiservice.domain.errors import FieldError, InvalidInput
from aiservice.domain.signature import Column, Signature

FeatureType = Literal["number", "integer", "boolean", "category", "string"]
_FEATURE_TYPES = ("number", "integer", "boolean", "category", "string")
_DTYPES = {
    "float16",
    "float32",
    "float64",
    "int8",
    "int16",
    "int32",
    "int64",
    "uint8",
    "uint16",
    "uint32",
    "uint64",
    "bool",
}


@dataclass(frozen=True)
class Feature:
    name: str
    type: FeatureType = "number"
    values: tuple[Any, ...] | None = None
    nullable: bool = False  # callers may send null (a missing value)

    def to_json(self) -> dict[str, Any]:
        data: dict[str, Any] = {"name": self.name, "type": self.type}
        if self.values is not None:
            data["values"] = list(self.values)
        if self.nullable:
            data["nullable"] = True
        return data


@dataclass(frozen=True)
class TabularSchema:
    features: tuple[Feature, ...]
    kind: Literal["tabular"] = "tabular"

    @property
    def names(self) -> list[str]:
        return [f.name for f in self.features]

    def to_json(self) -> dict[str, Any]:
        return {"type": "tabular", "features": [f.to_json() for f in self.features]}


@dataclass(frozen=True)
class TensorSchema:
    name: str
    dtype: str
    shape: tuple[int, ...]  # one sample's shape: no batch dimension
    kind: Literal["tensor"] = "tensor"


@dataclass(frozen=True)
class TextSchema:
    name: str = "text"
    max_length: int = 10_000
    kind: Literal["text"] = "text"


@dataclass(frozen=True)
class ImageSchema:
    name: str = "image"
    formats: tuple[str, ...] = ("jpeg", "png")
    max_pixels: int = 16_000_000
    kind: Literal["image"] = "image"


InputSchema = TabularSchema | TensorSchema | TextSchema | ImageSchema


def _bad(field_name: str, message: str) -> InvalidInput:
    return InvalidInput(f"{field_name}: {message}", errors=[FieldError(field_name, message)])


def parse_input_schema(raw: dict[str, Any], where: str = "body.inputSchema") -> InputSchema | None:
    """The schema a model declares, or None when it declares none; InvalidInput if it is malformed."""
    if not raw:
        return None
    kind = raw.get("type")
    if kind == "tabular":
        return _tabular(raw, where)
    if kind == "tensor":
        dtype = raw.get("dtype", "float32")
        shape = raw.get("shape")
        if dtype not in _DTYPES:
            raise _bad(f"{where}.dtype", f"must be one of {', '.join(sorted(_DTYPES))}")
        if not isinstance(shape, list) or not all(type(d) is int and (d > 0 or d == -1) for d in shape):
            raise _bad(
                f"{where}.shape",
                "one sample's shape is required (no batch dimension): a list of positive sizes or -1",
            )
        return TensorSchema(name=str(raw.get("name", "input")), dtype=dtype, shape=tuple(shape))
    if kind == "text":
        max_length = raw.get("maxLength", 10_000)
        if not isinstance(max_length, int) or max_length < 1:
            raise _bad(f"{where}.maxLength", "must be a positive integer")
        return TextSchema(name=str(raw.get("name", "text")), max_length=max_length)
    if kind == "image":
        formats = raw.get("format", ["jpeg", "png"])
        formats = [formats] if isinstance(formats, str) else formats
        if not isinstance(formats, list) or not set(formats) <= {"jpeg", "png"}:
            raise _bad(f"{where}.format", "must be jpeg, png or a list of them")
        max_pixels = raw.get("maxPixels", 16_000_000)
        if not isinstance(max_pixels, int) or max_pixels < 1:
            raise _bad(f"{where}.maxPixels", "must be a positive integer")
        return ImageSchema(name=str(raw.get("name", "image")), formats=tuple(formats), max_pixels=max_pixels)
    raise _bad(f"{where}.type", "must be one of tabular, tensor, text, image")


def _tabular(raw: dict[str, Any], where: str) -> TabularSchema:
    features = raw.get("features")
    if not isinstance(features, list) or not features:
        raise _bad(f"{where}.features", "a non-empty list of {name, type} objects is required")
    parsed: list[Feature] = []
    for i, item in enumerate(features):
        path = f"{where}.features.{i}"
        if not isinstance(item, dict) or not isinstance(item.get("name"), str) or not item["name"]:
            raise _bad(path, "each feature needs a name")
        ftype = item.get("type", "number")
        if ftype not in _FEATURE_TYPES:
            raise _bad(f"{path}.type", f"must be one of {', '.join(_FEATURE_TYPES)}")
        values = item.get("values")
        if ftype == "category" and (not isinstance(values, list) or not values):
            raise _bad(f"{path}.values", "a category feature lists its allowed values")
        if ftype != "category" and values is not None:
            raise _bad(f"{path}.values", "only a category feature lists values")
        # ``allowNaN`` is the field's earlier name, still read.
        nullable = item.get("nullable", item.get("allowNaN", False))
        if not isinstance(nullable, bool):
            raise _bad(f"{path}.nullable", "must be true or false")
        parsed.append(
            Feature(
                name=item["name"],
                type=ftype,
                values=tuple(values) if isinstance(values, list) else None,
                nullable=nullable,
            )
        )
    names = [f.name for f in parsed]
    if len(set(names)) != len(names):
        raise _bad(f"{where}.features", "feature names must be unique")
    return TabularSchema(tuple(parsed))


def model_columns(signature: Signature | None) -> tuple[Column, ...] | None:
    """The tabular columns a version takes, in its order; older signatures knew only their names."""
    if signature is None:
        return None
    if signature.columns:
        return signature.columns
    if signature.feature_names:
        return tuple(Column(name) for name in signature.feature_names)
    if signature.n_features:
        return tuple(Column(None) for _ in range(signature.n_features))
    return None


def derived_schema(signature: Signature | None) -> TabularSchema | None:
    """The schema a version's own named columns describe, for a model that declares none."""
    columns = model_columns(signature)
    if not columns or not all(c.name for c in columns):
        return None
    features = []
    for column in columns:
        kind: FeatureType = column.type
        if kind == "category" and not column.values:
            kind = "string"
        features.append(
            Feature(
                name=str(column.name),
                type=kind,
                values=column.values if kind == "category" else None,
                nullable=column.nullable,
            )
        )
    return TabularSchema(tuple(features))


def feature_vectors(rows: list[Any], signature: Signature | None, where: str = "input") -> np.ndarray:
    """``{"features": [...]}`` objects for a model without declared features, sized by its signature."""
    expected = signature.n_features if signature else None
    errors: list[FieldError] = []
    out: list[list[float]] = []
    for r, row in enumerate(rows):
        path = f"{where}.features" if len(rows) == 1 else f"{where}.{r}.features"
        values = row.get("features") if isinstance(row, dict) else None
        extra = sorted(set(row) - {"features"}) if isinstance(row, dict) else []
        if extra:
            errors += [FieldError(f"{path[: -len('.features')]}.{name}", "unknown field") for name in extra]
        if not isinstance(values, list):
            errors.append(FieldError(path, "a list of numbers is required (the model declares no features)"))
            continue
        if expected is not None and len(values) != expected:
            errors.append(FieldError(path, f"expected {expected} values, got {len(values)}"))
            continue
        bad = [
            i
            for i, v in enumerate(values)
            if isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v)
        ]
        if bad:
            errors.append(FieldError(f"{path}.{bad[0]}", "must be a finite number"))
            continue
        out.append([float(v) for v in values])
    if errors:
        raise InvalidInput("The input does not match the model.", errors=errors)
    if expected is None and len({len(v) for v in out}) > 1:
        raise _bad(where, "every row needs the same number of features")
    return np.asarray(out, dtype=np.float64)


def tensor_input(schema: TensorSchema, values: list[Any], where: str = "input") -> np.ndarray:
    """One value per sample, each of the schema's sample shape -> a batch of the declared dtype."""
    path = f"{where}.{schema.name}"
    try:
        array = np.asarray(values, dtype=schema.dtype)
    except (ValueError, TypeError, OverflowError) as exc:
        raise _bad(path, f"cannot be read as a {schema.dtype} tensor ({exc})") from exc
    expected = schema.shape
    sample = list(array.shape[1:])
    if array.ndim != len(expected) + 1 or any(
        e not in (-1, a) for e, a in zip(expected, sample, strict=True)
    ):
        raise _bad(path, f"has shape {sample}, expected {list(expected)} (-1 is any size)")
    if array.dtype.kind == "f" and not np.isfinite(array).all():
        raise _bad(path, "must not contain NaN or infinity")
    return array


def text_input(schema: TextSchema, values: list[Any], where: str = "input") -> np.ndarray:
    errors = []
    for i, value in enumerate(values):
        path = f"{where}.{schema.name}" if len(values) == 1 else f"{where}.{i}.{schema.name}"
        if not isinstance(value, str):
            errors.append(FieldError(path, "must be a string"))
        elif len(value) > schema.max_length:
            errors.append(FieldError(path, f"is longer than {schema.max_length} characters"))
    if errors:
        raise InvalidInput("The text input is not valid.", errors=errors)
    return np.asarray(values, dtype=object)


def parse_output_schema(raw: dict[str, Any], where: str = "body.outputSchema") -> tuple[Any, ...] | None:
    """The class labels an output schema declares (``{"classes": [...]}``), or None."""
    classes = raw.get("classes")
    if classes is None:
        return None
    if not isinstance(classes, list) or not classes or len(set(map(repr, classes))) != len(classes):
        raise _bad(f"{where}.classes", "a non-empty list of distinct labels is required")
    return tuple(classes)


def signature_mismatches(
    input_schema: InputSchema | None, classes: tuple[Any, ...] | None, signature: Signature
) -> list[FieldError]:
    """Where a model's declared schemas disagree with what its artifact really takes and gives."""
    problems: list[FieldError] = []
    if isinstance(input_schema, TabularSchema):
        problems += _tabular_mismatches(input_schema, model_columns(signature))
    if isinstance(input_schema, TensorSchema) and len(signature.inputs) == 1:
        sample = signature.inputs[0].shape[1:]
        declared = input_schema.shape
        if len(sample) != len(declared) or any(
            a > 0 and d > 0 and a != d for a, d in zip(sample, declared, strict=True)
        ):
            problems.append(
                FieldError(
                    "inputSchema.shape",
                    f"the schema declares samples of shape {list(declared)}, the model takes samples of "
                    f"shape {list(sample)} (the shape is one sample's, without the batch dimension)",
                )
            )
    own = signature.classes
    if classes is not None and own is not None and len(classes) != len(own):
        problems.append(
            FieldError(
                "outputSchema.classes",
                f"the schema names {len(classes)} classes, the model predicts {len(own)}",
            )
        )
    elif classes is not None and own is not None and names_its_classes(own) and set(classes) != set(own):
        problems.append(
            FieldError(
                "outputSchema.classes",
                f"the model predicts the labels {sorted(map(str, own))}, the schema declares "
                f"{sorted(map(str, classes))}: declared classes rename a model's class positions only "
                "when the model predicts numbers",
            )
        )
    return problems


def names_its_classes(classes: tuple[Any, ...]) -> bool:
    """Whether a model's own classes are names (text), which callers should see as they are, rather than
    positions (0, 1, 2...) that declared classes rename."""
    return any(isinstance(c, str) for c in classes)


def _tabular_mismatches(schema: TabularSchema, columns: tuple[Column, ...] | None) -> list[FieldError]:
    if columns is None:
        return []
    if len(schema.features) != len(columns):
        return [
            FieldError(
                "inputSchema.features",
                f"the schema declares {len(schema.features)} features, the model takes {len(columns)}",
            )
        ]
    if not all(c.name for c in columns):
        return []
    model_names = [str(c.name) for c in columns]
    if set(model_names) != set(schema.names):
        return [
            FieldError(
                "inputSchema.features",
                f"the schema names the features {schema.names}, the model was fitted on {model_names}",
            )
        ]
    by_name = {c.name: c for c in columns}
    problems = []
    for i, feature in enumerate(schema.features):
        message = _type_mismatch(feature, by_name[feature.name])
        if message:
            problems.append(FieldError(f"inputSchema.features.{i}.type", message))
    return problems


def _type_mismatch(feature: Feature, column: Column) -> str | None:
    if column.raw and feature.type not in ("category", "string"):
        known = f" (it knows {list(column.values)})" if column.values else ""
        return (
            f"the model reads {feature.name!r} as text{known}; declare it as a category with its values, "
            "or as a string"
        )
    if not column.raw and feature.type == "string":
        return f"the model reads {feature.name!r} as a number, not text"
    if column.raw and feature.type == "category" and column.values is not None:
        unknown = [v for v in feature.values or () if v not in column.values]
        if unknown:
            return f"the model does not know the categories {unknown} of {feature.name!r}"
    return None
