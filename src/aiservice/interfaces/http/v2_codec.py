"""The Open Inference Protocol (v2) wire format: requests with JSON or binary tensors in, responses out.

A body is JSON, or, with ``Inference-Header-Content-Length: N``, N bytes of JSON followed by the raw
bytes of the inputs that declare ``parameters.binary_data_size`` (little-endian, row-major; each BYTES
element a 4-byte little-endian length and its bytes). Every problem names its field.
"""

from __future__ import annotations

import math
import struct
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import orjson

from aiservice.domain.errors import FieldError, InvalidInput, Unavailable
from aiservice.domain.schemas import Feature

DTYPES: dict[str, np.dtype[Any]] = {
    "BOOL": np.dtype(np.bool_),
    "UINT8": np.dtype("<u1"),
    "UINT16": np.dtype("<u2"),
    "UINT32": np.dtype("<u4"),
    "UINT64": np.dtype("<u8"),
    "INT8": np.dtype("<i1"),
    "INT16": np.dtype("<i2"),
    "INT32": np.dtype("<i4"),
    "INT64": np.dtype("<i8"),
    "FP16": np.dtype("<f2"),
    "FP32": np.dtype("<f4"),
    "FP64": np.dtype("<f8"),
    "BYTES": np.dtype(object),
}
_BY_KIND_SIZE = {(dt.kind, dt.itemsize): name for name, dt in DTYPES.items() if name != "BYTES"}
_JSON_KINDS = {"b": "b", "u": "iu", "i": "iu", "f": "iuf", "O": "U"}  # datatype kind -> JSON array kinds
_LENGTH = struct.Struct("<I")


class MalformedRequest(InvalidInput):
    """A request the protocol cannot read or serve (400), as opposed to tensors the model refuses (422)."""

    code = "malformed-inference-request"
    title = "Malformed inference request"


def invalid(field_name: str, message: str, code: str | None = None) -> InvalidInput:
    return InvalidInput(f"{field_name}: {message}", errors=[FieldError(field_name, message)], code=code)


def malformed(field_name: str, message: str, code: str | None = None) -> MalformedRequest:
    return MalformedRequest(f"{field_name}: {message}", errors=[FieldError(field_name, message)], code=code)


def datatype_of(dtype: np.dtype[Any] | str) -> str:
    """The v2 datatype of a numpy dtype (or its name); strings and objects are BYTES."""
    try:
        dt = np.dtype(dtype)
    except TypeError:  # a framework's own name for strings
        return "BYTES"
    if dt.kind in "OUS":
        return "BYTES"
    return _BY_KIND_SIZE.get((dt.kind, dt.itemsize), "FP64" if dt.kind == "f" else "BYTES")


def label_datatype(values: Any) -> str:
    """The datatype of a list of labels: BOOL, INT64, FP64, else BYTES."""
    if all(isinstance(v, bool | np.bool_) for v in values):
        return "BOOL"
    if all(isinstance(v, int | np.integer) and not isinstance(v, bool | np.bool_) for v in values):
        return "INT64"
    if all(isinstance(v, int | float | np.number) and not isinstance(v, bool | np.bool_) for v in values):
        return "FP64"
    return "BYTES"


@dataclass(frozen=True)
class Tensor:
    name: str
    datatype: str
    shape: tuple[int, ...]
    array: np.ndarray  # already in ``shape``; BYTES as an object array of str
    where: str  # "inputs.0", for errors


@dataclass(frozen=True)
class RequestedOutput:
    name: str
    binary: bool | None  # None: the request's default


@dataclass
class InferRequest:
    id: str | None
    inputs: list[Tensor]
    outputs: list[RequestedOutput] = field(default_factory=list)
    binary_output: bool = False

    def binary(self, output: RequestedOutput | None) -> bool:
        return self.binary_output if output is None or output.binary is None else output.binary


def parse_request(body: bytes | bytearray, header_length: str | None) -> InferRequest:
    view = memoryview(body)
    if header_length is None:
        header, rest = view, view[len(view) :]
    else:
        if not header_length.strip().isdigit() or int(header_length) > len(view):
            raise malformed(
                "header.Inference-Header-Content-Length", "must be the JSON header's size in bytes"
            )
        header, rest = view[: int(header_length)], view[int(header_length) :]
    try:
        raw = orjson.loads(header)
    except orjson.JSONDecodeError as exc:
        raise malformed("body", f"is not valid JSON ({exc})", code="malformed-json") from exc
    if not isinstance(raw, dict):
        raise malformed("body", "must be a JSON object")
    ident = raw.get("id")
    if ident is not None and not isinstance(ident, str):
        raise malformed("id", "must be a string")
    params = _object(raw.get("parameters"), "parameters")
    items = raw.get("inputs")
    if not isinstance(items, list) or not items:
        raise malformed("inputs", "a non-empty list of tensors is required")
    inputs, offset = [], 0
    for i, item in enumerate(items):
        tensor, used = _input(item, f"inputs.{i}", rest[offset:])
        inputs.append(tensor)
        offset += used
    if offset != len(rest):
        raise malformed("body", f"{len(rest) - offset} bytes of binary data follow the inputs unclaimed")
    names = [t.name for t in inputs]
    if len(set(names)) != len(names):
        raise malformed("inputs", "input names must be unique")
    return InferRequest(
        id=ident,
        inputs=inputs,
        outputs=_requested(raw.get("outputs")),
        binary_output=params.get("binary_data_output") is True,
    )


def _object(value: Any, where: str) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise malformed(where, "must be an object")
    return value


def _requested(raw: Any) -> list[RequestedOutput]:
    if raw is None:
        return []
    if not isinstance(raw, list):
        raise malformed("outputs", "must be a list of {name, parameters} objects")
    outputs = []
    for i, item in enumerate(raw):
        if not isinstance(item, dict) or not isinstance(item.get("name"), str):
            raise malformed(f"outputs.{i}.name", "a name is required")
        binary = _object(item.get("parameters"), f"outputs.{i}.parameters").get("binary_data")
        if binary is not None and not isinstance(binary, bool):
            raise malformed(f"outputs.{i}.parameters.binary_data", "must be true or false")
        outputs.append(RequestedOutput(item["name"], binary))
    if len({o.name for o in outputs}) != len(outputs):
        raise malformed("outputs", "output names must be unique")
    return outputs


def _input(item: Any, where: str, binary: memoryview) -> tuple[Tensor, int]:
    """One input tensor and how many bytes of the binary section it took."""
    if not isinstance(item, dict):
        raise malformed(where, "must be a {name, shape, datatype, data} object")
    name, datatype, shape = item.get("name"), item.get("datatype"), item.get("shape")
    if not isinstance(name, str) or not name:
        raise malformed(f"{where}.name", "a name is required")
    if datatype not in DTYPES:
        raise invalid(f"{where}.datatype", f"must be one of {', '.join(DTYPES)}")
    if not isinstance(shape, list) or not all(type(d) is int and d >= 0 for d in shape):
        raise invalid(f"{where}.shape", "a list of non-negative sizes is required")
    count = math.prod(shape)
    size = _object(item.get("parameters"), f"{where}.parameters").get("binary_data_size")
    if size is None:
        if "data" not in item:
            raise invalid(f"{where}.data", "is required (or parameters.binary_data_size)")
        flat, used = _from_json(item["data"], datatype, count, f"{where}.data"), 0
    else:
        if type(size) is not int or size < 0 or size > len(binary):
            raise malformed(f"{where}.parameters.binary_data_size", "exceeds the binary data sent")
        if "data" in item:
            raise malformed(f"{where}.data", "must be absent when the tensor is sent as binary data")
        flat, used = (
            _from_binary(binary[:size], datatype, count, f"{where}.parameters.binary_data_size"),
            size,
        )
    return Tensor(name, datatype, tuple(shape), flat.reshape(shape), where), used


def _from_json(data: Any, datatype: str, count: int, where: str) -> np.ndarray:
    if not isinstance(data, list):
        raise invalid(where, "must be a list (flat or nested, row-major)")
    try:
        array = np.asarray(data)
    except (ValueError, TypeError) as exc:
        raise invalid(where, "is ragged: nested lists must all have the same length") from exc
    if array.size != count:
        raise invalid(where, f"has {array.size} elements; the shape needs {count}")
    target = DTYPES[datatype]
    if count and array.dtype.kind not in _JSON_KINDS[target.kind]:
        expected = {"b": "true or false", "u": "integers", "i": "integers", "f": "numbers", "O": "strings"}
        raise invalid(where, f"must hold {expected[target.kind]} for {datatype}")
    if datatype == "BYTES":
        return array.reshape(-1).astype(object)
    flat = array.reshape(-1)
    converted = flat.astype(target.newbyteorder("="))
    if target.kind in "iu" and count and not np.array_equal(converted, flat):
        raise invalid(where, f"holds values out of range for {datatype}")
    return converted


def _from_binary(raw: memoryview, datatype: str, count: int, where: str) -> np.ndarray:
    if datatype == "BYTES":
        return _bytes_elements(raw, count, where)
    dtype = DTYPES[datatype]
    if len(raw) != count * dtype.itemsize:
        raise invalid(
            where, f"is {len(raw)} bytes; {count} {datatype} elements take {count * dtype.itemsize}"
        )
    if datatype == "BOOL":
        flags: np.ndarray = np.frombuffer(raw, dtype=np.uint8) != 0
        return flags
    return np.frombuffer(raw, dtype=dtype)


def _bytes_elements(raw: memoryview, count: int, where: str) -> np.ndarray:
    out = np.empty(count, dtype=object)
    offset = 0
    try:
        for i in range(count):
            (length,) = _LENGTH.unpack_from(raw, offset)
            end = offset + 4 + length
            if end > len(raw):
                raise invalid(where, f"element {i} runs past the end of the tensor's bytes")
            out[i] = bytes(raw[offset + 4 : end]).decode("utf-8")
            offset = end
    except struct.error as exc:
        raise invalid(where, f"holds fewer than {count} length-prefixed elements") from exc
    except UnicodeDecodeError as exc:
        raise invalid(where, "BYTES elements must be UTF-8 text") from exc
    if offset != len(raw):
        raise invalid(where, f"holds more than {count} elements")
    return out


# -- model inputs ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class ModelInputs:
    """What a model takes over v2: the tensors its metadata lists, and how to read them."""

    tensors: list[dict[str, Any]]
    features: tuple[Feature, ...] = ()  # one 1-D tensor per feature is accepted too, in this order
    text_limit: int | None = None
    unsupported: str | None = None


def tensor_spec(name: str, datatype: str, shape: list[int]) -> dict[str, Any]:
    return {"name": name, "datatype": datatype, "shape": shape}


def to_batch(inputs: ModelInputs, tensors: list[Tensor]) -> np.ndarray:
    """The request's tensors as one batch, rows first, for ``infer_array``."""
    if inputs.unsupported:
        raise Unavailable(inputs.unsupported, code="unsupported-input")
    expected = inputs.tensors[0]
    if len(tensors) == 1 and tensors[0].name == expected["name"]:
        return _single(inputs, expected, tensors[0])
    known = {f.name for f in inputs.features}
    errors = [
        FieldError(f"{t.where}.name", f"unknown input {t.name!r}; this model takes {_takes(inputs)}")
        for t in tensors
        if t.name not in known
    ]
    if not errors:
        given = {t.name for t in tensors}
        errors = [
            FieldError("inputs", f"no tensor for feature {f.name!r}")
            for f in inputs.features
            if f.name not in given
        ]
    if errors:
        raise InvalidInput(f"The inputs do not match the model: {errors[0].message}.", errors=errors)
    by_name = {t.name: t for t in tensors}
    return _columns(inputs.features, [by_name[f.name] for f in inputs.features])


def _takes(inputs: ModelInputs) -> str:
    single = repr(inputs.tensors[0]["name"])
    if not inputs.features:
        return single
    return f"{single} or one tensor per feature ({', '.join(f.name for f in inputs.features)})"


def _single(inputs: ModelInputs, expected: dict[str, Any], tensor: Tensor) -> np.ndarray:
    where, shape = tensor.where, expected["shape"]
    if tensor.datatype != expected["datatype"]:
        raise invalid(f"{where}.datatype", f"must be {expected['datatype']} for this model")
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
    if array.dtype.kind == "f":
        finite = np.isfinite(array)
        if inputs.features:
            allowed = np.array([f.allow_nan for f in inputs.features])
            bad = [
                f.name for f, ok in zip(inputs.features, finite.all(axis=0) | allowed, strict=True) if not ok
            ]
            if bad:
                raise invalid(f"{where}.data", f"holds NaN or infinity for {', '.join(bad)}")
        elif not finite.all():
            raise invalid(f"{where}.data", "must not hold NaN or infinity")
    return array


def _columns(features: tuple[Feature, ...], tensors: list[Tensor]) -> np.ndarray:
    rows = tensors[0].shape[0] if tensors[0].shape else 0
    errors: list[FieldError] = []
    for t in tensors:
        if t.shape not in ((rows,), (rows, 1)) or rows < 1:
            errors.append(
                FieldError(f"{t.where}.shape", "must be [N] with N >= 1 and the same N for every feature")
            )
    if errors:
        raise InvalidInput("Feature tensors must be 1-D and equally long.", errors=errors)
    out = np.empty((rows, len(features)), dtype=np.float32)
    for c, (feature, tensor) in enumerate(zip(features, tensors, strict=True)):
        column, problem = _column(feature, tensor)
        if problem:
            errors.append(FieldError(problem[0], problem[1]))
        else:
            out[:, c] = column
    if errors:
        raise InvalidInput(
            f"The feature tensors are not valid: {', '.join(e.field for e in errors[:5])}.", errors=errors
        )
    return out


def _column(feature: Feature, tensor: Tensor) -> tuple[np.ndarray, tuple[str, str] | None]:
    """A feature's values as float32, the way ``tabular_rows`` encodes them, or (field, problem)."""
    flat, datatype, where = tensor.array.reshape(-1), tensor.datatype, tensor.where
    if feature.type == "category":
        values = feature.values or ()
        wanted = label_datatype(values)
        if (datatype == "BYTES") != (wanted == "BYTES") or (datatype == "BOOL") != (wanted == "BOOL"):
            return flat, (f"{where}.datatype", f"must be {wanted} for the category feature {feature.name!r}")
        index = {v: i for i, v in enumerate(values)}
        codes = np.fromiter((index.get(v, -1) for v in flat.tolist()), dtype=np.float32, count=len(flat))
        if (codes < 0).any():
            return flat, (f"{where}.data", f"must hold only {list(values)}")
        return codes, None
    if feature.type == "boolean":
        if datatype != "BOOL":
            return flat, (f"{where}.datatype", "must be BOOL for a boolean feature")
        return flat.astype(np.float32), None
    if datatype in ("BOOL", "BYTES"):
        return flat, (f"{where}.datatype", f"must be numeric for the {feature.type} feature {feature.name!r}")
    column = flat.astype(np.float32)
    finite = np.isfinite(column)
    if not feature.allow_nan and not finite.all():
        return flat, (f"{where}.data", "must not hold NaN or infinity")
    if feature.type == "integer" and (np.mod(column[finite], 1) != 0).any():
        return flat, (f"{where}.data", "must hold whole numbers")
    return column, None


# -- responses --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Output:
    name: str
    datatype: str
    array: np.ndarray


def serialize_bytes(array: np.ndarray) -> bytes:
    """Length-prefixed elements; each distinct value (a class label, mostly) is encoded once."""
    encoded: dict[str | bytes, bytes] = {}

    def encode(item: Any) -> bytes:
        key = item if isinstance(item, str | bytes) else _text(item)
        piece = encoded.get(key)
        if piece is None:
            data = key if isinstance(key, bytes) else key.encode()
            piece = encoded[key] = _LENGTH.pack(len(data)) + data
        return piece

    return b"".join(map(encode, array.reshape(-1).tolist()))


def _text(value: Any) -> str:
    if isinstance(value, str):
        return value
    return value.decode(errors="replace") if isinstance(value, bytes) else str(value)


def encode_response(header: dict[str, Any], outputs: list[tuple[Output, bool]]) -> tuple[bytes, int | None]:
    """The body and, when some output is binary, the JSON header's length."""
    entries, blobs = [], []
    for output, binary in outputs:
        entry: dict[str, Any] = {
            "name": output.name,
            "datatype": output.datatype,
            "shape": list(output.array.shape),
        }
        if binary:
            if output.datatype == "BYTES":
                blob = serialize_bytes(output.array)
            else:
                blob = np.ascontiguousarray(output.array, dtype=DTYPES[output.datatype]).tobytes()
            entry["parameters"] = {"binary_data_size": len(blob)}
            blobs.append(blob)
        else:
            flat = output.array.reshape(-1)
            data = flat.tolist()
            entry["data"] = [_text(v) for v in data] if output.datatype == "BYTES" else data
        entries.append(entry)
    body = orjson.dumps({**header, "outputs": entries})
    if not blobs:
        return body, None
    return b"".join([body, *blobs]), len(body)
