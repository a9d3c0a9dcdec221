"""The Open Inference Protocol (v2) wire format: requests with JSON or binary tensors in, responses out.

A body is JSON, or, with ``Inference-Header-Content-Length: N``, N bytes of JSON followed by the raw
bytes of the inputs that declare ``parameters.binary_data_size`` (little-endian, row-major; each BYTES
element a 4-byte little-endian length and its bytes). Every problem names its field.

The common request, numeric tensors whose ``data`` is a flat list of numbers or a list of equally long
rows of numbers, is decoded by msgspec against a typed shape (which refuses ``true``, ``null`` and
strings as it parses), and its numbers are packed straight into an array with no per-element dtype
inference. Any other request, and any that this path might read differently, is read again by the
generic reader (orjson, then ``numpy.asarray``): its answer, or its problem, is always that reader's.
"""

from __future__ import annotations

import math
import struct
from dataclasses import dataclass, field
from itertools import starmap
from typing import Annotated, Any

import msgspec
import numpy as np
import orjson

from aiservice.domain.errors import FieldError, InvalidInput

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
MAX_DIMENSION = 2**31 - 1  # numpy refuses sizes whose product overflows, even with a zero among them
MAX_DIMENSIONS = 32


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
        typed = _NUMERIC_REQUEST.decode(header)
    except (msgspec.DecodeError, RecursionError):
        typed = None  # not all-numeric (or not valid): the generic reader answers, or names the problem
    if typed is not None:
        try:
            return _request(typed.id, typed.parameters, typed.inputs, typed.outputs, rest, typed=True)
        except (InvalidInput, _Uncommon):
            pass  # the generic reader gives the answer, or today's problem for it
    try:
        raw = orjson.loads(header)
    except orjson.JSONDecodeError as exc:
        raise malformed("body", f"is not valid JSON ({exc})", code="malformed-json") from exc
    if not isinstance(raw, dict):
        raise malformed("body", "must be a JSON object")
    return _request(raw.get("id"), raw.get("parameters"), raw.get("inputs"), raw.get("outputs"), rest)


class _NumericInput(msgspec.Struct):
    """An input as the typed decoder reads it: ``data``, when present, only numbers, flat or in rows;
    sizes within int64 (past 64 bits orjson reads a float, which the generic reader refuses)."""

    name: Any = None
    datatype: Any = None
    shape: list[Annotated[int, msgspec.Meta(ge=0, le=2**63 - 1)]] | None = None
    parameters: Any = None
    data: list[int | float | list[int | float]] | msgspec.UnsetType = msgspec.UNSET


class _NumericRequest(msgspec.Struct):
    inputs: list[_NumericInput]
    id: Any = None
    parameters: Any = None
    outputs: Any = None


_NUMERIC_REQUEST = msgspec.json.Decoder(_NumericRequest)


class _Uncommon(Exception):
    """The typed path leaves this request to the generic reader."""


def _request(
    ident: Any, parameters: Any, items: Any, requested: Any, rest: memoryview, typed: bool = False
) -> InferRequest:
    if ident is not None and not isinstance(ident, str):
        raise malformed("id", "must be a string")
    params = _object(parameters, "parameters")
    if not isinstance(items, list) or not items:
        raise malformed("inputs", "a non-empty list of tensors is required")
    inputs, offset = [], 0
    for i, item in enumerate(items):
        tensor, used = _input(item, f"inputs.{i}", rest[offset:], typed)
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
        outputs=_requested(requested),
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


def _input(item: Any, where: str, binary: memoryview, typed: bool = False) -> tuple[Tensor, int]:
    """One input tensor and how many bytes of the binary section it took."""
    if isinstance(item, _NumericInput):
        name, datatype, shape, parameters, data = msgspec.structs.astuple(item)
    elif isinstance(item, dict):
        name, datatype, shape, parameters = map(item.get, ("name", "datatype", "shape", "parameters"))
        data = item.get("data", msgspec.UNSET)
    else:
        raise malformed(where, "must be a {name, shape, datatype, data} object")
    if not isinstance(name, str) or not name:
        raise malformed(f"{where}.name", "a name is required")
    if datatype not in DTYPES:
        raise invalid(f"{where}.datatype", f"must be one of {', '.join(DTYPES)}")
    if not isinstance(shape, list) or not all(type(d) is int and d >= 0 for d in shape):
        raise invalid(f"{where}.shape", "a list of non-negative sizes is required")
    if len(shape) > MAX_DIMENSIONS or math.prod(d for d in shape if d) > MAX_DIMENSION:
        raise invalid(
            f"{where}.shape", f"a tensor has at most {MAX_DIMENSIONS} dimensions and {MAX_DIMENSION} elements"
        )
    count = math.prod(shape)
    size = _object(parameters, f"{where}.parameters").get("binary_data_size")
    if size is None:
        if data is msgspec.UNSET:
            raise invalid(f"{where}.data", "is required (or parameters.binary_data_size)")
        reader = _numbers if typed else _from_json
        flat, used = reader(data, datatype, count, f"{where}.data"), 0
    else:
        if type(size) is not int or size < 0 or size > len(binary):
            raise malformed(f"{where}.parameters.binary_data_size", "exceeds the binary data sent")
        if data is not msgspec.UNSET:
            raise malformed(f"{where}.data", "must be absent when the tensor is sent as binary data")
        flat, used = (
            _from_binary(binary[:size], datatype, count, f"{where}.parameters.binary_data_size"),
            size,
        )
    return Tensor(name, datatype, tuple(shape), flat.reshape(shape), where), used


def _from_json(data: Any, datatype: str, count: int, where: str) -> np.ndarray:
    """A JSON tensor's elements; ``null`` is a missing value (NaN in a float tensor, None in BYTES),
    which the model's schema then accepts or refuses."""
    if not isinstance(data, list):
        raise invalid(where, "must be a list (flat or nested, row-major)")
    try:
        array = np.asarray(data)
    except (ValueError, TypeError) as exc:
        raise invalid(where, "is ragged: nested lists must all have the same length") from exc
    if array.size != count:
        raise invalid(where, f"has {array.size} elements; the shape needs {count}")
    target = DTYPES[datatype]
    if array.dtype == object and target.kind in "fO":
        array = _with_nulls(array, target, where)
    elif count and array.dtype.kind not in _JSON_KINDS[target.kind]:
        raise invalid(where, f"must hold {_EXPECTED[target.kind]} for {datatype}")
    if datatype == "BYTES":
        return array.reshape(-1).astype(object)
    flat = array.reshape(-1)
    converted = flat.astype(target.newbyteorder("="))
    if target.kind in "iu" and count and not np.array_equal(converted, flat):
        raise invalid(where, f"holds values out of range for {datatype}")
    return converted


def _numbers(data: list[Any], datatype: str, count: int, where: str) -> np.ndarray:
    """A typed-decoded tensor's numbers (ints and floats, flat or in rows) packed straight into an array,
    without ``numpy.asarray``'s pass over every element to infer a dtype.

    ``_Uncommon`` (so the generic reader decides) for ragged rows, a row among numbers, an element
    count that is not the shape's, a float or an out-of-range integer in an integer tensor, and an
    FP32 tensor that may be all integers with one past 2**53 (there the generic reader rounds once,
    from int64, not twice, through float64). A few numbers, and datatypes that take no numbers, go
    to ``_from_json`` as they are: it reads all-number data exactly as it reads the generic's."""
    target = DTYPES[datatype]
    if target.kind not in "iuf" or count < _PACK_FROM:
        return _from_json(data, datatype, count, where)
    code = "d" if target.kind == "f" else "q"  # 'd' takes ints and floats, 'q' ints only
    first = data[0] if data else None
    try:  # and each refuses a row among numbers, a number among rows, and a row of another width
        if type(first) is list:
            raw = b"".join(starmap(struct.Struct(f"={len(first)}{code}").pack, data))
            first = first[0] if first else None
        else:
            raw = struct.pack(f"={len(data)}{code}", *data)
    except (struct.error, TypeError):
        raise _Uncommon from None
    packed = np.frombuffer(raw, dtype=np.float64 if code == "d" else np.int64)
    if packed.size != count:
        raise _Uncommon
    if datatype == "FP32" and type(first) is int and np.abs(packed).max() >= 2.0**53:
        raise _Uncommon
    if target.kind in "iu" and datatype != "INT64":  # 'q' has checked INT64's range
        low, high = _LIMITS[datatype]
        if packed.min() < low or packed.max() > high:
            raise _Uncommon
    with np.errstate(over="ignore"):  # past FP32's (FP16's) range: infinity, which the model refuses
        return packed.astype(target.newbyteorder("="))


_PACK_FROM = 256  # fewer elements: numpy.asarray is as quick as packing, and already exact
_LIMITS = {
    name: (int(np.iinfo(dt).min), int(np.iinfo(dt).max)) for name, dt in DTYPES.items() if dt.kind in "iu"
}

_EXPECTED = {"b": "true or false", "u": "integers", "i": "integers", "f": "numbers", "O": "strings"}


def _with_nulls(array: np.ndarray, target: np.dtype[Any], where: str) -> np.ndarray:
    """Elements of mixed JSON types: numbers or null for a float tensor, strings or null for BYTES."""
    flat = array.reshape(-1)
    if target.kind == "O":
        if not all(v is None or isinstance(v, str) for v in flat.tolist()):
            raise invalid(where, "must hold strings (or null for a missing value) for BYTES")
        return array
    values = flat.tolist()
    if not all(v is None or (isinstance(v, int | float) and not isinstance(v, bool)) for v in values):
        raise invalid(where, "must hold numbers (or null for a missing value)")
    return np.asarray([math.nan if v is None else v for v in values], dtype=np.float64).reshape(array.shape)


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
