"""The fast readers of JSON tensors and named-feature rows give exactly what the generic readers give.

A v2 request is decoded by msgspec against a typed shape and its numbers packed straight into an array;
whatever that path does not take (another datatype, null, a bool, ragged rows, a count or a range the
generic reader refuses...) is read again by the generic reader (orjson, ``numpy.asarray``). Over a
corpus, both give equal arrays of equal dtypes, or the same problem. Batch rows of numbers are read in
bulk, and strict JSON bodies are parsed once: the same pins apply there.
"""

from __future__ import annotations

import json
import math
import random
from collections.abc import Callable, Iterator
from typing import Any

import msgspec
import numpy as np
import orjson
import pytest

from aiservice.application.serving.inputs import ServingModel, label_of, labels_of
from aiservice.domain.errors import InvalidInput
from aiservice.domain.schemas import Feature, TabularSchema
from aiservice.domain.tabular import TabularPlan
from aiservice.interfaces.http import strict_json, v2_codec
from aiservice.interfaces.http.v2_codec import MalformedRequest, parse_request

RNG = np.random.default_rng(12)
MATRIX = np.round(RNG.normal(size=(300, 20)), 6)
BIG = 2**60 + 2**36 + 1  # int64 -> float32 rounds up; through float64 it is a tie, rounded down


def body(data: Any, datatype: str = "FP32", shape: list[int] | None = None) -> bytes:
    shape = shape if shape is not None else [len(data)]
    return orjson.dumps({"inputs": [{"name": "input", "shape": shape, "datatype": datatype, "data": data}]})


def raw_body(data: str, datatype: str = "FP32", shape: str = "[300]") -> bytes:
    """JSON orjson would not write (NaN, huge numbers, repeated keys), spelt out."""
    return (
        f'{{"inputs": [{{"name": "input", "shape": {shape}, "datatype": "{datatype}", "data": {data}}}]}}'
    ).encode()


def column(value: Any, n: int = 300) -> list[Any]:
    return [value] * n


CORPUS: dict[str, bytes] = {
    # the common case, flat and in rows; FP64 and FP16 too
    "fp32-flat": body(MATRIX.ravel().tolist(), shape=[300, 20]),
    "fp32-rows": body(MATRIX.tolist(), shape=[300, 20]),
    "fp64-rows": body(MATRIX.tolist(), "FP64", [300, 20]),
    "fp16-flat": body(MATRIX.ravel().tolist(), "FP16", [300, 20]),
    "one-row": body(MATRIX[:1].tolist(), shape=[1, 20]),
    "flat-into-3d": body(MATRIX.ravel().tolist(), shape=[300, 4, 5]),
    "rows-against-shape": body(MATRIX.reshape(600, 10).tolist(), shape=[300, 20]),  # counts agree
    # integers and floats mixed, whichever comes first
    "ints-in-fp32": body(list(range(-150, 150))),
    "ints-then-floats": body([*range(150), *([0.5] * 150)]),
    "floats-then-ints": body([*([0.5] * 150), *range(150)]),
    "int-rows-in-fp64": body([[i, i + 1] for i in range(150)], "FP64", [150, 2]),
    # values at the edges of float32 and float64
    "tiny-and-signed-zero": body([-0.0, 0.0, 1e-45, -1e-45, 5e-324, 1.4e-45, 3.4028235e38] * 43, shape=[301]),
    "fp64-extremes": body([1.7976931348623157e308, -5e-324, -0.0, 2.2250738585072014e-308] * 75, "FP64"),
    "fp32-overflow": body([1e300, -1e300, *range(298)]),
    "fp32-overflow-first": body([1e39, *([0.5] * 299)]),
    "fp16-overflow": body([70000.0, 65519.0, 65520.0, *([1.0] * 297)], "FP16"),
    "fp16-ints-overflow": body([70000, *range(299)], "FP16"),
    "fp32-past-2**53-all-ints": body(column(BIG)),
    "fp32-past-2**53-then-float": body([BIG, *([0.5] * 299)]),
    "fp32-past-2**53-float-first": body([0.5, *column(BIG, 299)]),
    "fp64-past-2**53-all-ints": body(column(BIG), "FP64"),
    "fp32-past-64-bits": raw_body("[" + ", ".join(["123456789012345678901234567890"] * 300) + "]"),
    "fp64-past-64-bits-mixed": raw_body("[1.5, " + ", ".join(["18446744073709551616"] * 299) + "]", "FP64"),
    "uint64-max-in-fp32": body(column(2**64 - 1)),
    "uint64-and-negative-in-fp32": body([2**64 - 1, -1, *range(298)]),
    # integer datatypes
    "int64": body(list(range(-150, 150)), "INT64"),
    "int64-rows": body([[i, -i] for i in range(150)], "INT64", [150, 2]),
    "int64-edges": body([-(2**63), 2**63 - 1, *range(298)], "INT64"),
    "int64-past-range": body([2**63, *range(299)], "INT64"),
    "int64-float": body([*range(299), 1.0], "INT64"),
    "int64-float-first": body([1.5, *range(299)], "INT64"),
    "int32-past-range": body([2**31, *range(299)], "INT32"),
    "int8": body([-128, 127, *([0] * 298)], "INT8"),
    "int8-past-range": body([-129, *([0] * 299)], "INT8"),
    "uint8-past-range": body([256, *([0] * 299)], "UINT8"),
    "uint8-negative": body([-1, *([0] * 299)], "UINT8"),
    "uint16": body(list(range(300)), "UINT16"),
    "uint64-max": body(column(2**64 - 1), "UINT64"),
    "uint64-past-int64": body([2**63, *range(299)], "UINT64"),
    "int64-past-64-bits": raw_body("[" + ", ".join(["99999999999999999999"] * 300) + "]", "INT64"),
    # not numbers: the generic reader decides (and names the problem)
    "all-bools-in-fp32": body(column(True)),
    "bool-among-floats": body([*([0.5] * 299), True]),
    "bool-first": body([False, *([0.5] * 299)]),
    "bool-in-int64": body([True, *range(299)], "INT64"),
    "null-in-fp32": body([*([0.5] * 299), None]),
    "null-in-int64": body([None, *range(299)], "INT64"),
    "string-in-fp32": body([*([0.5] * 299), "1.0"]),
    "object-in-fp32": body([*([0.5] * 299), {"a": 1}]),
    "bools": body([True, False] * 150, "BOOL"),
    "ints-in-bool": body([1, 0] * 150, "BOOL"),
    "floats-in-bool": body([1.0, 0.0] * 150, "BOOL"),
    "floats-in-bytes": body([1.0, 0.0] * 150, "BYTES"),
    "strings": body(["a", "b", None] * 100, "BYTES"),
    # element counts and nesting
    "too-few": body(list(range(299)), shape=[300]),
    "too-many": body(list(range(301)), shape=[300]),
    "too-few-rows": body(MATRIX[:299].tolist(), shape=[300, 20]),
    "ragged": body([*MATRIX[:299].tolist(), MATRIX[299, :19].tolist()], shape=[300, 20]),
    "ragged-first": body([MATRIX[0, :19].tolist(), *MATRIX[1:].tolist()], shape=[300, 20]),
    "ragged-same-count": body(
        [*MATRIX[:298].tolist(), MATRIX[298, :19].tolist(), [*MATRIX[299].tolist(), 1.0]], shape=[300, 20]
    ),
    "row-among-numbers": body([*range(299), [1]]),
    "number-among-rows": body([*MATRIX[:299].tolist(), 1.0], shape=[300, 20]),
    "three-levels": body(MATRIX.reshape(300, 4, 5).tolist(), shape=[300, 4, 5]),
    "empty-rows": body([[] for _ in range(300)], shape=[300, 0]),
    "empty": body([], shape=[0, 20]),
    "empty-first-row": body([[], *MATRIX[1:].tolist()], shape=[300, 20]),
    "data-not-a-list": body(1.0, shape=[1]),
    "size-past-64-bits": raw_body("[]", shape=f"[{2**70}, 0]"),
    "size-at-64-bits": raw_body("[]", shape=f"[{2**64 - 1}, 0]"),
    "negative-size": raw_body("[]", shape="[-1, 0]"),
    "bool-size": raw_body("[]", shape="[true, 0]"),
    "data-null": body(None, shape=[1]),
    # JSON the generic reader refuses or reads its own way
    "nan-literal": raw_body("[NaN" + ", 1" * 299 + "]"),
    "infinity-literal": raw_body("[Infinity" + ", 1" * 299 + "]"),
    "past-float64": raw_body("[1e400" + ", 1" * 299 + "]"),
    "underflow": raw_body("[1e-400" + ", 1" * 299 + "]"),
    "repeated-data-key": raw_body('[1], "data": [' + ", ".join(["2.5"] * 300) + "]"),
    "too-deep": raw_body("[" * 2000 + "1" + "]" * 2000),
    "trailing-garbage": body(column(0.5)) + b" x",
}


def multi(*tensors: dict[str, Any], **top: Any) -> bytes:
    return orjson.dumps({"inputs": list(tensors), **top})


def tensor(name: str, data: Any, datatype: str = "FP32", shape: list[int] | None = None) -> dict[str, Any]:
    return {"name": name, "datatype": datatype, "shape": shape or [len(data)], "data": data}


FLOATS = MATRIX.ravel().tolist()
CORPUS |= {
    "two-tensors": multi(tensor("a", FLOATS), tensor("b", FLOATS[:20], "FP64")),
    "tensor-and-strings": multi(tensor("a", FLOATS), tensor("b", ["x"] * 300, "BYTES")),
    "same-names": multi(tensor("a", FLOATS), tensor("a", FLOATS)),
    "id-and-outputs": multi(
        tensor("a", FLOATS),
        id="r1",
        parameters={"binary_data_output": True},
        outputs=[{"name": "label", "parameters": {"binary_data": False}}, {"name": "probabilities"}],
    ),
    "bad-id": multi(tensor("a", FLOATS), id=7),
    "bad-parameters": multi(tensor("a", FLOATS), parameters=[]),
    "bad-outputs": multi(tensor("a", FLOATS), outputs=[{"name": "x"}, {"name": "x"}]),
    "no-inputs": multi(),
    "inputs-not-a-list": orjson.dumps({"inputs": {"a": 1}}),
    "input-not-an-object": orjson.dumps({"inputs": [7]}),
    "no-name": multi({"datatype": "FP32", "shape": [300], "data": FLOATS[:300]}),
    "unknown-datatype": multi(tensor("a", FLOATS, "FP8")),
    "bad-shape": multi(tensor("a", FLOATS, shape=[-1])),
    "float-shape": orjson.dumps({"inputs": [{**tensor("a", FLOATS), "shape": [6000.0]}]}),
    "no-data": multi({"name": "a", "datatype": "FP32", "shape": [300]}),
    "unknown-members": multi({**tensor("a", FLOATS), "extra": {"deep": [1, 2]}}, more=1),
    "not-an-object": orjson.dumps([1, 2]),
}


def binary_body(data_too: bool = False) -> tuple[bytes, str]:
    raw = np.arange(20, dtype="<f4").tobytes()
    header = {"name": "b", "datatype": "FP32", "shape": [1, 20], "parameters": {"binary_data_size": len(raw)}}
    if data_too:
        header["data"] = list(range(20))
    head = orjson.dumps({"inputs": [tensor("a", FLOATS), header]})
    return head + raw, str(len(head))


def outcome(raw: bytes, header_length: str | None = None) -> Any:
    """The arrays a request is read into, or the problem it is refused with."""
    try:
        with np.errstate(over="ignore"):  # the generic reader's cast to FP32 / FP16 warns on overflow
            parsed = parse_request(raw, header_length)
    except InvalidInput as exc:
        return (type(exc), exc.code, exc.detail, [(e.field, e.message) for e in exc.errors])
    except ValueError as exc:  # a size numpy cannot hold (the same, whichever reader)
        return (type(exc), str(exc))
    return (
        parsed.id,
        parsed.binary_output,
        [(o.name, o.binary) for o in parsed.outputs],
        [(t.name, t.datatype, t.shape, t.where, t.array.dtype, t.array.tolist()) for t in parsed.inputs],
    )


class _Refused:
    def decode(self, _: Any) -> Any:
        raise msgspec.DecodeError("the generic reader only")


@pytest.fixture
def generic(monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[[bytes, str | None], Any]]:
    """The outcome of today's generic reader alone (orjson, then ``numpy.asarray``)."""

    def read(raw: bytes, header_length: str | None = None) -> Any:
        with monkeypatch.context() as patch:
            patch.setattr(v2_codec, "_NUMERIC_REQUEST", _Refused())
            return outcome(raw, header_length)

    yield read


def same(a: Any, b: Any) -> bool:
    """Equal outcomes; NaN equals NaN (null is a missing value) and -0.0 is not 0.0."""
    return json.dumps(a, default=repr, allow_nan=True) == json.dumps(b, default=repr, allow_nan=True)


@pytest.mark.parametrize("raw", list(CORPUS.values()), ids=list(CORPUS))
def test_the_typed_reader_gives_what_the_generic_reader_gives(raw: bytes, generic: Any) -> None:
    assert same(outcome(raw), generic(raw))


@pytest.mark.parametrize("data_too", [False, True])
def test_binary_tensors_beside_json_ones_read_the_same(data_too: bool, generic: Any) -> None:
    raw, length = binary_body(data_too)
    assert same(outcome(raw, length), generic(raw, length))


def test_random_numbers_read_the_same(generic: Any) -> None:
    rng = random.Random(7)
    for _ in range(200):
        values = [
            rng.choice(
                [
                    rng.uniform(-1e6, 1e6),
                    rng.randint(-(2**63), 2**63 - 1),
                    rng.randint(-100, 100),
                    float.fromhex(f"0x1.{rng.getrandbits(52):013x}p{rng.randint(-160, 160)}"),
                    rng.uniform(-1, 1) * 10.0 ** rng.randint(-320, 308),
                ]
            )
            for _ in range(rng.choice([256, 300, 511]))
        ]
        for datatype in ("FP16", "FP32", "FP64", "INT64"):
            raw = body(values, datatype)
            assert same(outcome(raw), generic(raw)), (datatype, values)


@pytest.fixture
def typed_only(monkeypatch: pytest.MonkeyPatch) -> None:
    """Fails a request the typed reader leaves to the generic reader."""

    def refuse(_: Any) -> Any:
        raise AssertionError("the generic reader read this request")

    monkeypatch.setattr(v2_codec.orjson, "loads", refuse)


@pytest.mark.parametrize(
    "name",
    [
        *("fp32-flat", "fp32-rows", "fp64-rows", "fp16-flat", "one-row", "ints-in-fp32", "floats-then-ints"),
        *("tiny-and-signed-zero", "fp32-overflow-first", "fp16-overflow", "int64", "int64-rows", "uint16"),
    ],
)
def test_the_common_requests_are_read_by_the_typed_reader(name: str, typed_only: None) -> None:
    parse_request(CORPUS[name], None)


def test_values_at_the_edges_of_float32() -> None:
    array = parse_request(CORPUS["tiny-and-signed-zero"], None).inputs[0].array
    assert array.dtype == np.float32
    assert np.signbit(array[0]) and not np.signbit(array[1])
    assert array[2] == np.float32(1e-45) > 0 and array[3] == -array[2]
    assert array[4] == 0 and array[6] == np.finfo(np.float32).max
    overflow = parse_request(CORPUS["fp32-overflow-first"], None).inputs[0].array
    assert overflow[0] == np.inf and overflow.dtype == np.float32


def test_an_all_integer_fp32_tensor_is_rounded_once() -> None:
    array = parse_request(CORPUS["fp32-past-2**53-all-ints"], None).inputs[0].array
    assert array[0] == np.float32(2**60 + 2**37) == np.array([BIG]).astype(np.float32)[0]
    assert np.float64(BIG).astype(np.float32) == np.float32(2**60)  # what two roundings would give


@pytest.mark.parametrize(
    ("name", "status", "message"),
    [
        ("all-bools-in-fp32", 422, "must hold numbers for FP32"),
        ("int64-float", 422, "must hold integers for INT64"),
        ("uint8-past-range", 422, "holds values out of range for UINT8"),
        ("ragged", 422, "is ragged"),
        ("number-among-rows", 422, "is ragged"),
        ("too-few-rows", 422, "has 5980 elements; the shape needs 6000"),
        ("too-many", 422, "has 301 elements; the shape needs 300"),
        ("nan-literal", 400, "is not valid JSON"),
        ("past-float64", 400, "is not valid JSON"),
    ],
)
def test_refusals_name_the_field(name: str, status: int, message: str) -> None:
    with pytest.raises(InvalidInput) as caught:
        parse_request(CORPUS[name], None)
    assert isinstance(caught.value, MalformedRequest) == (status == 400)
    field = "body" if status == 400 else "inputs.0.data"
    assert caught.value.errors[0].field == field and message in caught.value.errors[0].message


def test_the_last_of_repeated_keys_wins_as_before() -> None:
    assert parse_request(CORPUS["repeated-data-key"], None).inputs[0].array.tolist() == [2.5] * 300


# -- named-feature rows (/batch-predict) --------------------------------------------------------


PLAN = TabularPlan.bind(TabularSchema(tuple(Feature(f"f{i}") for i in range(20))), None)
ROWS = [{f"f{i}": v for i, v in enumerate(r)} for r in MATRIX.tolist()]


def slow_rows(plan: TabularPlan, rows: list[Any], where: str = "inputs") -> np.ndarray:
    """The cell-by-cell reader alone, which names every problem."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(TabularPlan, "_plain_number_rows", lambda self, rows: None)
        return plan.rows(rows, where)


def row_outcome(read: Callable[[], np.ndarray]) -> Any:
    try:
        array = read()
    except InvalidInput as exc:
        return [(e.field, e.message) for e in exc.errors]
    return (array.dtype, array.shape, array.tolist())


def changed(row: int, **values: Any) -> list[Any]:
    rows = [dict(r) for r in ROWS]
    rows[row].update(values)
    return rows


ROW_CORPUS: dict[str, list[Any]] = {
    "numbers": ROWS,
    "ints": [{f"f{i}": i * r for i in range(20)} for r in range(50)],
    "keys-in-another-order": [dict(reversed(r.items())) for r in ROWS],
    "one-row": ROWS[:1],
    "huge-int": changed(3, f7=2**80),
    "bool": changed(3, f7=True),
    "null": changed(3, f7=None),
    "string": changed(3, f7="1.5"),
    "nan": changed(3, f7=math.nan),
    "infinity": changed(3, f7=-math.inf),
    "list": changed(3, f7=[1.0]),
    "missing": [*ROWS[:3], {k: v for k, v in ROWS[3].items() if k != "f7"}, *ROWS[4:]],
    "extra": changed(3, colour=1.0),
    "renamed": [*ROWS[:3], {("g7" if k == "f7" else k): v for k, v in ROWS[3].items()}, *ROWS[4:]],
    "not-an-object": [*ROWS[:3], [1.0] * 20, *ROWS[4:]],
    "a-string-row": [*ROWS[:3], "f" * 20, *ROWS[4:]],
    "a-number-row": [*ROWS[:3], 7, *ROWS[4:]],
}


@pytest.mark.parametrize("rows", list(ROW_CORPUS.values()), ids=list(ROW_CORPUS))
def test_batch_rows_read_in_bulk_as_cell_by_cell(rows: list[Any]) -> None:
    bulk = row_outcome(lambda: PLAN.rows(rows, "inputs"))
    assert bulk == row_outcome(lambda: slow_rows(PLAN, rows))
    other = TabularPlan.bind(TabularSchema(tuple(Feature(f"f{i}") for i in reversed(range(20)))), None)
    assert row_outcome(lambda: other.rows(rows)) == row_outcome(lambda: slow_rows(other, rows, "input"))


def test_a_bad_cell_is_named_by_row_and_feature() -> None:
    assert row_outcome(lambda: PLAN.rows(ROW_CORPUS["bool"], "inputs")) == [
        ("inputs.3.f7", "must be a number")
    ]


def test_a_one_feature_schema_reads_its_rows_in_bulk() -> None:
    plan = TabularPlan.bind(TabularSchema((Feature("x"),)), None)
    assert plan.rows([{"x": 1}, {"x": 2.5}]).tolist() == [[1.0], [2.5]]
    assert plan._plain_number_rows([{"x": 1}, {"x": True}]) is None


def test_labels_of_a_column_are_label_of_each_row() -> None:
    serving = ServingModel.__new__(ServingModel)
    index: dict[Any, int]
    for labels, index in [(("no", "yes"), {0: 0, 1: 1}), (None, {}), (("a",), {0: 0, 1: 1})]:
        serving.labels, serving.class_index = labels, index
        for values in [
            np.array([0, 1, 1, 2]),
            np.array([0.0, 1.0, np.nan]),
            np.array(["x", 1, None], dtype=object),
            np.array([[0, 1], [1, 0]]),
            np.array([True, False]),
        ]:
            expected = [label_of(serving, v) for v in values]
            got = labels_of(serving, values)
            assert json.dumps(got, default=repr) == json.dumps(expected, default=repr)
            assert [type(v) for v in got] == [type(v) for v in expected]


# -- strict JSON, parsed once --------------------------------------------------------------------


def members(node: Any, depth_left: int) -> int:
    """The walk as it was written first, one value at a time: the oracle for the bulk one."""
    if isinstance(node, str):
        return node.count(":")
    if not isinstance(node, dict | list):
        return 0
    if depth_left == 0:
        raise strict_json._TooDeep
    count = len(node) + sum(k.count(":") for k in node) if isinstance(node, dict) else 0
    values = node.values() if isinstance(node, dict) else node
    return count + sum(members(v, depth_left - 1) for v in values)


def random_document(rng: random.Random, depth: int) -> Any:
    roll = rng.random()
    if depth <= 0 or roll < 0.3:
        return rng.choice([1, 1.5, True, None, "a", "a:b", "::", ""])
    if roll < 0.6:
        return [random_document(rng, depth - 1) for _ in range(rng.randrange(4))]
    if roll < 0.8:  # rows of objects: what a batch is
        keys = ["k", "k:1", "z"]
        return [
            {f"{rng.choice(keys)}{i}": random_document(rng, depth - 2) for i in range(rng.randrange(3))}
            for _ in range(rng.randrange(4))
        ]
    return {f"{rng.choice(['a', 'b:', 'c'])}{i}": random_document(rng, depth - 1) for i in range(4)}


def walk(node: Any, depth: int, count: Callable[[Any, int], int]) -> Any:
    try:
        return count(node, depth)
    except strict_json._TooDeep:
        return "too deep"


def test_the_bulk_walk_counts_as_the_walk_one_value_at_a_time() -> None:
    rng = random.Random(3)
    for _ in range(3000):
        document = random_document(rng, rng.randrange(1, 8))
        for depth in range(8):
            assert walk(document, depth, strict_json._members) == walk(document, depth, members)


@pytest.mark.parametrize(
    "raw",
    [
        orjson.dumps({"inputs": ROWS}),
        b'{"input": {"a": 1, "b": "x:y", "c": [1, {"d": null}]}}',
        b'{"a": NaN, "b": 18446744073709551615}',  # orjson refuses NaN: Python's parse is kept
        b'{"name": "caf\\u00e9", "n": 1}',  # an escape takes the exact path
    ],
)
def test_a_strict_body_is_kept_as_parsed(raw: bytes) -> None:
    problem, document = strict_json.strict_document(raw, 64)
    assert problem is None
    assert json.dumps(document, allow_nan=True) == json.dumps(json.loads(raw), allow_nan=True)


@pytest.mark.parametrize(
    "raw", [b'{"a": 1, "a": 2}', b"[" * 70 + b"]" * 70, b'{"a": "\\u0000"}', b'{"a": ', b"nope"]
)
def test_a_refused_body_or_no_json_leaves_no_document(raw: bytes) -> None:
    assert strict_json.strict_document(raw, 64)[1] is strict_json.NOT_PARSED


def test_rows_of_numbers_in_a_body_are_counted_at_once() -> None:
    document = orjson.loads(orjson.dumps({"inputs": ROWS}))
    assert strict_json._members(document, 64) == 1 + sum(map(len, ROWS)) == members(document, 64)
    assert strict_json._members({"rows": [{"a": {"b": 1}}]}, 4) == 3  # four levels, three members
    with pytest.raises(strict_json._TooDeep):
        strict_json._members({"rows": [{"a": {"b": 1}}]}, 3)
