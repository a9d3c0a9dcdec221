"""What a model takes over the Open Inference Protocol, and the request's tensors turned into its batch.

A tabular model takes one ``[N, F]`` tensor named ``input`` (listed as FP64; any numeric datatype is
read) of model-ready values in its schema's feature order (a category as the index of its value, a
boolean as 0 or 1, NaN for a missing value of a nullable feature), or one 1-D tensor per feature,
named as the feature and typed as it is (a category or string as BYTES, a boolean as BOOL). Models
with a ``string`` feature take the per-feature form only. The named features then become the model's
own columns through the same ``TabularPlan`` as ``/predict`` uses.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from aiservice.domain.errors import FieldError, InvalidInput, Unavailable
from aiservice.domain.schemas import Feature
from aiservice.domain.tabular import TabularPlan
from aiservice.interfaces.http.v2_codec import DTYPES, Tensor, invalid, label_datatype

NUMERIC = ("FP16", "FP32", "FP64", "INT8", "INT16", "INT32", "INT64", "UINT8", "UINT16", "UINT32", "UINT64")


@dataclass(frozen=True)
class ModelInputs:
    """What a model takes over v2: the tensors its metadata lists, and how to read them."""

    tensors: list[dict[str, Any]]
    plan: TabularPlan | None = None  # a tabular model: one tensor per feature is accepted too
    text_limit: int | None = None
    unsupported: str | None = None

    @property
    def features(self) -> tuple[Feature, ...]:
        return self.plan.features if self.plan is not None else ()


def tensor_spec(name: str, datatype: str, shape: list[int]) -> dict[str, Any]:
    return {"name": name, "datatype": datatype, "shape": shape}


def feature_datatype(feature: Feature) -> str:
    if feature.type == "category":
        return label_datatype(feature.values or ())
    return {"boolean": "BOOL", "string": "BYTES", "integer": "INT64"}.get(feature.type, "FP64")


def tabular_inputs(plan: TabularPlan) -> ModelInputs:
    """The ``input`` matrix where every feature has a number for it; else one tensor per feature."""
    if any(f.type == "string" for f in plan.features):
        tensors = [tensor_spec(f.name, feature_datatype(f), [-1]) for f in plan.features]
    else:
        tensors = [tensor_spec("input", "FP64", [-1, len(plan.features)])]
    return ModelInputs(tensors, plan)


def to_batch(inputs: ModelInputs, tensors: list[Tensor]) -> np.ndarray:
    """The request's tensors as the model's batch, rows first, for ``infer_array``."""
    if inputs.unsupported:
        raise Unavailable(inputs.unsupported, code="unsupported-input")
    expected = inputs.tensors[0]
    plan = inputs.plan
    if len(tensors) == 1 and tensors[0].name == expected["name"] and expected["name"] == "input":
        return _single(inputs, expected, tensors[0])
    if plan is None:
        if len(tensors) == 1 and tensors[0].name == expected["name"]:
            return _single(inputs, expected, tensors[0])
        raise InvalidInput(
            f"The inputs do not match the model: it takes {_takes(inputs)}.",
            errors=[FieldError(f"{t.where}.name", f"unknown input {t.name!r}") for t in tensors],
        )
    known = set(plan.names)
    errors = [
        FieldError(f"{t.where}.name", f"unknown input {t.name!r}; this model takes {_takes(inputs)}")
        for t in tensors
        if t.name not in known
    ]
    if not errors:
        given = {t.name for t in tensors}
        errors = [FieldError("inputs", f"no tensor for feature {n!r}") for n in plan.names if n not in given]
    if errors:
        raise InvalidInput(f"The inputs do not match the model: {errors[0].message}.", errors=errors)
    by_name = {t.name: t for t in tensors}
    return _columns(plan, [by_name[name] for name in plan.names])


def _takes(inputs: ModelInputs) -> str:
    names = [t["name"] for t in inputs.tensors]
    if inputs.plan is None or names != ["input"]:
        return ", ".join(repr(n) for n in names)
    return f"'input' or one tensor per feature ({', '.join(inputs.plan.names)})"


def _single(inputs: ModelInputs, expected: dict[str, Any], tensor: Tensor) -> np.ndarray:
    where, shape = tensor.where, expected["shape"]
    numeric = expected["datatype"] in NUMERIC
    if tensor.datatype != expected["datatype"] and not (numeric and tensor.datatype in NUMERIC):
        wanted = "a numeric datatype" if numeric else expected["datatype"]
        raise invalid(f"{where}.datatype", f"must be {wanted} for this model")
    if len(tensor.shape) != len(shape) or any(
        e not in (-1, a) for e, a in zip(shape, tensor.shape, strict=True)
    ):
        raise invalid(f"{where}.shape", f"is {list(tensor.shape)}; this model takes {shape} (-1 is any size)")
    if not tensor.shape or tensor.shape[0] < 1:
        raise invalid(f"{where}.shape", "at least one row is required")
    array = tensor.array
    if inputs.text_limit is not None:
        too_long = [i for i, text in enumerate(array.reshape(-1)) if len(text) > inputs.text_limit]
        if too_long:
            raise invalid(
                f"{where}.data", f"element {too_long[0]} is longer than {inputs.text_limit} characters"
            )
    if inputs.plan is not None:
        matrix = array.astype(np.float64, copy=False)
        if inputs.plan.plain_numbers and np.isfinite(matrix).all():  # the common case, checked at once
            return inputs.plan.from_matrix(matrix)
        problems = [
            p
            for c, f in enumerate(inputs.plan.features)
            if (p := _code_problem(inputs.plan, c, f, matrix[:, c]))
        ]
        if problems:
            raise invalid(f"{where}.data", "; ".join(problems))
        return inputs.plan.from_matrix(matrix)
    if array.dtype.kind == "f" and not np.isfinite(array).all():
        raise invalid(f"{where}.data", "must not hold NaN or infinity")
    return array


def _code_problem(plan: TabularPlan, c: int, feature: Feature, column: np.ndarray) -> str | None:
    """Why a feature's column of the ``input`` matrix cannot be read, or None."""
    missing = np.isnan(column)
    if missing.any() and (problem := plan.missing_problem(c)):
        return f"{feature.name!r}: {problem}"
    present = column[~missing]
    if np.isinf(present).any():
        return f"{feature.name!r} holds infinity"
    if feature.type in ("category", "boolean", "integer") and (np.mod(present, 1) != 0).any():
        return f"{feature.name!r} must hold whole numbers"
    if feature.type == "category" and ((present < 0) | (present >= len(feature.values or ()))).any():
        return f"{feature.name!r} must hold indexes of its values 0..{len(feature.values or ()) - 1}"
    if feature.type == "boolean" and ((present != 0) & (present != 1)).any():
        return f"{feature.name!r} must hold 0 or 1"
    return None


def _columns(plan: TabularPlan, tensors: list[Tensor]) -> np.ndarray:
    rows = tensors[0].shape[0] if tensors[0].shape else 0
    errors: list[FieldError] = []
    for t in tensors:
        if t.shape not in ((rows,), (rows, 1)) or rows < 1:
            errors.append(
                FieldError(f"{t.where}.shape", "must be [N] with N >= 1 and the same N for every feature")
            )
    if errors:
        raise InvalidInput("Feature tensors must be 1-D and equally long.", errors=errors)
    columns: list[np.ndarray] = []
    for c, (feature, tensor) in enumerate(zip(plan.features, tensors, strict=True)):
        column, problem = _column(plan, c, feature, tensor)
        if problem:
            errors.append(FieldError(problem[0], problem[1]))
        columns.append(column)
    if errors:
        raise InvalidInput(
            f"The feature tensors are not valid: {', '.join(e.field for e in errors[:5])}.", errors=errors
        )
    return plan.from_columns(columns)


def _column(
    plan: TabularPlan, c: int, feature: Feature, tensor: Tensor
) -> tuple[np.ndarray, tuple[str, str] | None]:
    """A feature's values as its model column takes them (a category's value or its index), or why not."""
    flat, datatype, where = tensor.array.reshape(-1), tensor.datatype, tensor.where
    if feature.type in ("category", "string"):
        wanted = feature_datatype(feature)
        if (datatype == "BYTES") != (wanted == "BYTES") or (datatype == "BOOL") != (wanted == "BOOL"):
            message = f"must be {wanted} for the {feature.type} feature {feature.name!r}"
            return flat, (f"{where}.datatype", message)
        values = flat.tolist()
        if any(v is None for v in values) and (problem := plan.missing_problem(c)):
            return flat, (f"{where}.data", problem)
        allowed = feature.values if feature.type == "category" else plan.known[c]
        if allowed is not None:
            index = {v: i for i, v in enumerate(allowed)}
            codes = np.asarray(
                [math.nan if v is None else index.get(v, -1) for v in values], dtype=np.float64
            )
            if (codes < 0).any():
                return flat, (f"{where}.data", f"must hold only {list(allowed)}")
            if not plan.raw[c]:
                return codes, None
        return flat.astype(object), None
    if feature.type == "boolean":
        if datatype != "BOOL":
            return flat, (f"{where}.datatype", "must be BOOL for a boolean feature")
        return flat.astype(np.float64), None
    if datatype in ("BOOL", "BYTES"):
        return flat, (f"{where}.datatype", f"must be numeric for the {feature.type} feature {feature.name!r}")
    column = flat.astype(np.float64)
    missing = np.isnan(column)
    if missing.any() and (problem := plan.missing_problem(c)):
        return flat, (f"{where}.data", problem)
    if np.isinf(column).any():
        return flat, (f"{where}.data", "must not hold infinity")
    if feature.type == "integer" and (np.mod(column[~missing], 1) != 0).any():
        return flat, (f"{where}.data", "must hold whole numbers")
    return column, None


def output_array(datatype: str, values: np.ndarray) -> np.ndarray:
    """``values`` as exactly the datatype the model's metadata declares."""
    return np.asarray(values).astype(DTYPES[datatype].newbyteorder("="), copy=False)
