"""Streamed csv and parquet: every row, batch by batch, in bounded memory, with the same statistics and the
same messages (file, column, row in the whole file) as reading the file whole."""

from __future__ import annotations

import tracemalloc
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import pytest

from aiservice.infrastructure.datasets import DatasetError, Table, read_table
from aiservice.infrastructure.datasets.streaming import (
    MAX_LABELS,
    TableStream,
    split_stream,
    stream_table,
)

ROWS, FEATURES, BATCH = 200_000, 20, 4096
NAMES = [f"f{i}" for i in range(FEATURES)]


class Big:
    """200k rows x 20 float columns and an integer label, as csv and as parquet, and the arrays."""

    def __init__(self, folder: Path) -> None:
        rng = np.random.default_rng(0)
        self.X = rng.normal(loc=np.arange(FEATURES), scale=1 + np.arange(FEATURES) / 4, size=(ROWS, FEATURES))
        self.y = (self.X[:, 0] + rng.normal(size=ROWS) > 0).astype(np.int64) + 2 * (self.X[:, 1] > 1)
        table = pa.table({**{n: self.X[:, i] for i, n in enumerate(NAMES)}, "label": self.y})
        self.nbytes = table.nbytes  # the whole table in arrow memory: what streaming must stay well under
        self.csv = folder / "big.csv"
        pacsv.write_csv(table, self.csv)
        self.parquet = folder / "big.parquet"
        # pyarrow decodes parquet a row group at a time: files meant for streaming keep row groups modest.
        pq.write_table(table, self.parquet, row_group_size=8192)

    def path(self, format: str) -> str:
        return str(self.csv if format == "csv" else self.parquet)


@pytest.fixture(scope="module")
def big(tmp_path_factory: pytest.TempPathFactory) -> Big:
    return Big(tmp_path_factory.mktemp("big"))


def stream(uri: str, format: str = "csv", target: str = "label", batch_rows: int = BATCH) -> TableStream:
    return stream_table(uri, format, target, None, {}, batch_rows)


def refusal(stream: TableStream) -> str:
    with pytest.raises(DatasetError) as caught:
        for _ in stream.batches():
            pass
    return str(caught.value)


FORMATS = pytest.mark.parametrize("format", ["csv", "parquet"])


@FORMATS
def test_a_pass_holds_a_small_part_of_the_table_in_memory_at_a_time(big: Big, format: str) -> None:
    data = stream(big.path(format), format)
    arrow_peak = rows = 0
    tracemalloc.start()
    try:
        for batch in data.batches():
            rows += len(batch.y)
            arrow_peak = max(arrow_peak, pa.total_allocated_bytes())
        _, numpy_peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert rows == ROWS
    assert arrow_peak < big.nbytes / 4
    assert numpy_peak < big.nbytes / 4


@FORMATS
def test_batches_hold_every_row_in_file_order_and_no_more_than_asked(big: Big, format: str) -> None:
    batches = list(stream(big.path(format), format).batches())
    assert max(len(batch.y) for batch in batches) == BATCH
    np.testing.assert_array_equal(np.concatenate([b.X for b in batches]), big.X.astype(np.float32))
    np.testing.assert_array_equal(np.concatenate([b.y for b in batches]), big.y)
    assert batches[0].feature_names == NAMES


@FORMATS
def test_stats_agree_with_numpy_on_the_whole_data(big: Big, format: str) -> None:
    stats = stream(big.path(format), format).stats()
    features = big.X.astype(np.float32).astype(np.float64)  # what a table holds: float32 features
    assert stats.rows == ROWS
    np.testing.assert_allclose(stats.mean, features.mean(axis=0), rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(stats.std, features.std(axis=0), rtol=1e-9)
    assert stats.target_mean == pytest.approx(big.y.mean(), rel=1e-9)
    assert stats.target_std == pytest.approx(big.y.std(), rel=1e-9)
    assert stats.labels is not None
    assert stats.labels.tolist() == [0, 1, 2, 3]


def test_every_pass_reads_the_same_rows(big: Big) -> None:
    data = stream(big.path("parquet"), "parquet", batch_rows=50_000)
    first, second = ([float(b.X.sum()) for b in data.batches()] for _ in range(2))
    assert first == second


def test_stream_reads_like_the_whole_file(tmp_path: Path) -> None:
    path = tmp_path / "iris.csv"
    path.write_text("sepal,petal,label\n5.1,1.4,setosa\n7.0,4.7,versicolor\n6.3,6.0,virginica\n")
    whole = read_table(str(path), "csv", "label", ["petal", "sepal"], {})
    (batch,) = stream_table(str(path), "csv", "label", ["petal", "sepal"], {}).batches()
    np.testing.assert_array_equal(batch.X, whole.X)
    assert batch.y.tolist() == whole.y.tolist() == ["setosa", "versicolor", "virginica"]
    assert batch.feature_names == ["petal", "sepal"]


# --- problems far down a file name their row in the whole file ---


def numbered_csv(path: Path, rows: int = 5000, changed: dict[int, str] | None = None) -> str:
    """``a,b,label`` rows numbered from 1; ``changed`` replaces whole data rows by number."""
    lines = ["a,b,label"] + [f"{row},{row * 2},{row % 3}" for row in range(1, rows + 1)]
    for row, line in (changed or {}).items():
        lines[row] = line
    path.write_text("\n".join(lines) + "\n")
    return str(path)


def test_csv_non_numeric_value_past_the_first_batch_names_column_and_row(tmp_path: Path) -> None:
    uri = numbered_csv(tmp_path / "d.csv", changed={4321: "4321,oops,0"})
    assert (
        refusal(stream(uri, batch_rows=1000))
        == "d.csv: column 'b' has a non-numeric value 'oops' at row 4321"
    )


def test_csv_missing_value_past_the_first_batch_names_column_and_row(tmp_path: Path) -> None:
    uri = numbered_csv(tmp_path / "d.csv", changed={3001: "3001,,0"})
    assert refusal(stream(uri, batch_rows=1000)) == "d.csv: column 'b' has a missing value at row 3001"


def test_csv_empty_label_past_the_first_batch_names_its_row(tmp_path: Path) -> None:
    uri = numbered_csv(tmp_path / "d.csv", changed={2500: "2500,5000,"})
    assert refusal(stream(uri, batch_rows=1000)) == "d.csv: target column 'label' is empty at row 2500"


def test_csv_row_with_too_many_fields_past_the_first_batch_is_refused(tmp_path: Path) -> None:
    uri = numbered_csv(tmp_path / "d.csv", rows=150_000, changed={120_000: "1,2,3,4"})  # past 1 MiB
    message = refusal(stream(uri, batch_rows=1000))
    assert message.startswith("d.csv is not a readable csv file:")
    assert "Expected 3 columns, got 4" in message


def test_parquet_nan_past_the_first_batch_names_column_and_row(tmp_path: Path) -> None:
    a = np.arange(5000, dtype=np.float64)
    a[4443] = np.nan
    pq.write_table(pa.table({"a": a, "label": np.arange(5000) % 2}), tmp_path / "d.parquet")
    message = refusal(stream(str(tmp_path / "d.parquet"), "parquet", batch_rows=1000))
    assert message == "d.parquet: column 'a' has a missing value (NaN) at row 4444"


@FORMATS
def test_missing_target_is_refused_before_any_row_is_read(big: Big, format: str) -> None:
    with pytest.raises(DatasetError, match=r"has no target column 'species' \(columns: f0, f1"):
        stream(big.path(format), format, target="species")


def test_a_missing_file_is_a_dataset_error(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match=r"could not read gone\.csv"):
        stream(str(tmp_path / "gone.csv"))


def test_npz_is_read_whole_not_streamed(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="npz data is read whole, not streamed"):
        stream(str(tmp_path / "d.npz"), "npz")


# --- labels ---


def test_text_labels_are_typed_over_the_whole_file_not_per_batch(tmp_path: Path) -> None:
    uri = numbered_csv(tmp_path / "d.csv", changed={4000: "4000,8000,2.5"})
    data = stream(uri, batch_rows=1000)
    first = next(iter(data.batches()))
    assert first.y.dtype == np.float64  # as read_table types the column: one float makes them all floats
    assert data.stats().labels is not None
    assert data.stats().labels.tolist() == [0.0, 1.0, 2.0, 2.5]


def test_text_labels_stay_text_in_every_batch_when_one_is_not_a_number(tmp_path: Path) -> None:
    uri = numbered_csv(tmp_path / "d.csv", changed={4000: "4000,8000,other"})
    data = stream(uri, batch_rows=1000)
    assert {batch.y.dtype.kind for batch in data.batches()} == {"U"}
    assert data.stats().target_mean is None


def test_a_continuous_target_has_no_label_set(tmp_path: Path) -> None:
    path = tmp_path / "r.parquet"
    pq.write_table(pa.table({"a": np.arange(MAX_LABELS + 10.0), "y": np.arange(MAX_LABELS + 10.0) / 7}), path)
    stats = stream(str(path), "parquet", target="y").stats()
    assert stats.labels is None
    assert stats.target_mean == pytest.approx((MAX_LABELS + 9) / 14)


# --- held-out rows ---


def test_split_holds_out_about_the_fraction_asked_the_same_rows_every_pass(big: Big) -> None:
    data = stream(big.path("parquet"), "parquet", batch_rows=50_000)
    train, validation = split_stream(data, 0.2, seed=7)

    def first_column(part: object) -> np.ndarray:
        return np.concatenate([batch.X[:, 0] for batch in part.batches()])  # type: ignore[attr-defined]

    held = first_column(validation)
    assert len(held) == pytest.approx(0.2 * ROWS, rel=0.03)
    assert len(first_column(train)) + len(held) == ROWS
    np.testing.assert_array_equal(first_column(validation), held)
    assert train.stats().rows + validation.stats().rows == ROWS


def test_split_rows_depend_on_the_seed(big: Big) -> None:
    data = stream(big.path("parquet"), "parquet", batch_rows=50_000)
    one, other = (next(iter(split_stream(data, 0.2, seed)[1].batches())) for seed in (1, 2))
    assert not np.array_equal(one.X[:100], other.X[:100])


def test_every_row_is_in_exactly_one_part(tmp_path: Path) -> None:
    table = Table(np.arange(1000, dtype=np.float32).reshape(-1, 1), np.arange(1000), ["a"])
    from aiservice.infrastructure.datasets.streaming import TableBatches

    train, validation = split_stream(TableBatches(table, 64), 0.3, seed=0)
    rows = sorted(int(v) for part in (train, validation) for batch in part.batches() for v in batch.y)
    assert rows == list(range(1000))
