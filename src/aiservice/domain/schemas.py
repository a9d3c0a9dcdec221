"""Input schemas: what callers send, checked field by field and turned into model-ready arrays.

Kinds: ``tabular`` (named features), ``tensor`` (dtype and shape with -1 wildcards), ``text``
(strings with a maximum length) and ``image`` (decoded by an adapter; checked here for shape). A
model without a declared schema takes ``{"features": [...]}`` sized by its runtime's signature.
Category features are encoded as the index of their value in the declared ``values`` list.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from aiservice.domain.errors import FieldError, InvalidInput
from aiservice.domain.signature import Signature

FeatureType = Literal["number", "integer", "boolean", "category"]
_FEATURE_TYPES = ("number", "integer", "boolean", "category")
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
    allow_nan: bool = False


@dataclass(frozen=True)
class TabularSchema:
    features: tuple[Feature, ...]
    kind: Literal["tabular"] = "tabular"

    @property
    def names(self) -> list[str]:
        return [f.name for f in self.features]

    @property
    def plain_numbers(self) -> bool:
        """Every feature a finite number: rows can be checked in bulk."""
        return all(f.type == "number" and not f.allow_nan for f in self.features)


@dataclass(frozen=True)
class TensorSchema:
    name: str
    dtype: str
    shape: tuple[int, ...]
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
            parsed.append(
                Feature(
                    name=item["name"],
                    type=ftype,
                    values=tuple(values) if isinstance(values, list) else None,
                    allow_nan=bool(item.get("allowNaN", False)),
                )
            )
        names = [f.name for f in parsed]
        if len(set(names)) != len(names):
            raise _bad(f"{where}.features", "feature names must be unique")
        return TabularSchema(tuple(parsed))
    if kind == "tensor":
        dtype = raw.get("dtype", "float32")
        shape = raw.get("shape")
        if dtype not in _DTYPES:
            raise _bad(f"{where}.dtype", f"must be one of {', '.join(sorted(_DTYPES))}")
        if not isinstance(shape, list) or not all(isinstance(d, int) and (d > 0 or d == -1) for d in shape):
            raise _bad(f"{where}.shape", "a list of positive sizes or -1 wildcards is required")
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


def tabular_rows(schema: TabularSchema, rows: list[Any], where: str = "input") -> np.ndarray:
    """Named-feature objects -> a float32 [N, F] array in the schema's order; every problem named."""
    fast = _plain_number_rows(schema, rows)
    if fast is not None:
        return fast
    errors: list[FieldError] = []
    out = np.empty((len(rows), len(schema.features)), dtype=np.float32)
    known = set(schema.names)
    for r, row in enumerate(rows):
        base = where if len(rows) == 1 else f"{where}.{r}"
        if not isinstance(row, dict):
            errors.append(FieldError(base, "must be an object of feature values"))
            continue
        errors += [FieldError(f"{base}.{name}", "unknown feature") for name in row if name not in known]
        for c, feature in enumerate(schema.features):
            path = f"{base}.{feature.name}"
            if feature.name not in row:
                errors.append(FieldError(path, "required"))
                continue
            value, problem = _cell(feature, row[feature.name])
            if problem:
                errors.append(FieldError(path, problem))
            else:
                out[r, c] = value
    if errors:
        shown = ", ".join(e.field for e in errors[:5])
        raise InvalidInput(f"The input does not match the model's features: {shown}.", errors=errors)
    return out


def _plain_number_rows(schema: TabularSchema, rows: list[Any]) -> np.ndarray | None:
    """The bulk path for all-number schemas; None (so every cell is checked and named) on any doubt."""
    if not schema.plain_numbers:
        return None
    names = schema.names
    try:
        values = [[row[name] for name in names] for row in rows if len(row) == len(names)]
    except (KeyError, TypeError):
        return None
    if len(values) != len(rows) or not all(type(v) is float or type(v) is int for r in values for v in r):
        return None  # bool is not int here: ``type(True) is bool``
    try:
        array = np.asarray(values, dtype=np.float64)
    except OverflowError:
        return None
    if not np.isfinite(array).all():
        return None
    return array.astype(np.float32)


def _cell(feature: Feature, value: Any) -> tuple[float, str | None]:
    if feature.type == "category":
        values = feature.values or ()
        if value not in values or isinstance(value, bool) != any(isinstance(v, bool) for v in values):
            return 0.0, f"must be one of {list(values)}"
        return float(values.index(value)), None
    if feature.type == "boolean":
        if not isinstance(value, bool):
            return 0.0, "must be true or false"
        return float(value), None
    if value is None and feature.allow_nan:
        return math.nan, None
    if isinstance(value, bool) or not isinstance(value, int | float):
        return 0.0, f"must be a {'whole ' if feature.type == 'integer' else ''}number"
    if not math.isfinite(value) and not feature.allow_nan:
        return 0.0, "must be a finite number"
    if feature.type == "integer" and math.isfinite(value) and value != int(value):
        return 0.0, "must be a whole number"
    return float(value), None


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
    return np.asarray(out, dtype=np.float32)


def tensor_input(schema: TensorSchema, values: list[Any], where: str = "input") -> np.ndarray:
    """Nested lists -> an array of the declared dtype, the leading dimension being the row count."""
    path = f"{where}.{schema.name}"
    try:
        array = np.asarray(values, dtype=schema.dtype)
    except (ValueError, TypeError, OverflowError) as exc:
        raise _bad(path, f"cannot be read as a {schema.dtype} tensor ({exc})") from exc
    expected = schema.shape
    if array.ndim != len(expected) or any(
        e not in (-1, a) for e, a in zip(expected, array.shape, strict=True)
    ):
        raise _bad(path, f"has shape {list(array.shape)}, expected {list(expected)} (-1 is any size)")
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
    n_features = signature.n_features
    if isinstance(input_schema, TabularSchema) and n_features is not None:
        if len(input_schema.features) != n_features:
            problems.append(
                FieldError(
                    "inputSchema.features",
                    f"the schema declares {len(input_schema.features)} features, "
                    f"the model takes {n_features}",
                )
            )
    if isinstance(input_schema, TensorSchema) and len(signature.inputs) == 1:
        actual = signature.inputs[0].shape
        declared = input_schema.shape
        if len(actual) != len(declared) or any(
            a > 0 and d > 0 and a != d for a, d in zip(actual, declared, strict=False)
        ):
            problems.append(
                FieldError(
                    "inputSchema.shape",
                    f"the schema declares {list(declared)}, the model takes {list(actual)}",
                )
            )
    if classes is not None and signature.classes is not None and len(classes) != len(signature.classes):
        problems.append(
            FieldError(
                "outputSchema.classes",
                f"the schema names {len(classes)} classes, the model predicts {len(signature.classes)}",
            )
        )
    return problems
