"""A folder of csv or parquet files is one dataset: every file under it, sorted by path, read as one table;
a file whose columns differ, a folder mixing csv and parquet, or one with no data is refused naming it."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from aiservice.infrastructure.datasets import DatasetError, check_readable, read_table
from aiservice.infrastructure.datasets.labels import target_values
from aiservice.infrastructure.datasets.readers import columns, folder_format
from aiservice.infrastructure.datasets.streaming import dataset_bytes, stream_table

HEADER = "sepal,petal,label\n"


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def parts(folder: Path, *bodies: str, header: str = HEADER, suffix: str = ".csv") -> str:
    for index, body in enumerate(bodies):
        write(folder / f"part-{index}{suffix}", header + body)
    return str(folder)


def refusal(uri: str, format: str = "csv", target: str | None = "label") -> str:
    with pytest.raises(DatasetError) as caught:
        read_table(uri, format, target, None, {})
    return str(caught.value)


def test_a_folder_of_csv_files_reads_as_one_table_in_file_name_order(tmp_path: Path) -> None:
    folder = parts(tmp_path / "train", "1,2,a\n3,4,b\n", "5,6,c\n")
    write(tmp_path / "train" / "sub" / "part-9.csv", HEADER + "7,8,d\n")  # read: the folder is recursive
    table = read_table(folder, "csv", "label", None, {})
    np.testing.assert_allclose(table.X, [[1, 2], [3, 4], [5, 6], [7, 8]])
    assert table.y.tolist() == ["a", "b", "c", "d"]
    assert table.feature_names == ["sepal", "petal"]
    assert check_readable(folder, "csv", "label", None, {}) == []


def test_hidden_and_underscore_entries_and_other_files_are_skipped(tmp_path: Path) -> None:
    folder = parts(tmp_path / "train", "1,2,a\n")
    write(tmp_path / "train" / "_SUCCESS", "")
    write(tmp_path / "train" / "_temporary" / "part-0.csv", "broken")
    write(tmp_path / "train" / ".part-0.csv.crc", "crc")
    write(tmp_path / "train" / "README.md", "# notes")
    assert read_table(folder, "csv", "label", None, {}).y.tolist() == ["a"]


def test_a_later_file_with_other_columns_is_named(tmp_path: Path) -> None:
    folder = parts(tmp_path / "train", "1,2,a\n", "3,4,b\n")
    write(tmp_path / "train" / "part-2.csv", "sepal,width,label\n1,2,c\n")
    expected = (
        "train/part-2.csv: its columns differ from those of train/part-0.csv, the folder's first file "
        "(lacks petal; adds width): every file of a folder must have the same columns"
    )
    assert check_readable(folder, "csv", "label", None, {}) == [expected]
    assert refusal(folder) == expected


def test_columns_in_another_order_are_read_by_name(tmp_path: Path) -> None:
    folder = parts(tmp_path / "train", "1,2,a\n")
    write(tmp_path / "train" / "part-1.csv", "label,petal,sepal\nb,4,3\n")
    table = read_table(folder, "csv", "label", None, {})
    np.testing.assert_allclose(table.X, [[1, 2], [3, 4]])


def test_empty_parts_are_skipped_and_a_folder_of_only_empty_parts_has_no_rows(tmp_path: Path) -> None:
    folder = parts(tmp_path / "train", "", "1,2,a\n")  # part-0 is a header alone, as Spark writes
    write(tmp_path / "train" / "part-2.csv", "")
    assert read_table(folder, "csv", "label", None, {}).y.tolist() == ["a"]
    assert check_readable(folder, "csv", "label", None, {}) == []
    empty = parts(tmp_path / "empty", "", "")
    assert refusal(empty) == "empty has no rows: its 2 csv files are empty"
    assert check_readable(empty, "csv", "label", None, {}) == ["empty has no rows: its 2 csv files are empty"]


def test_an_empty_folder_is_refused_clearly(tmp_path: Path) -> None:
    (tmp_path / "train").mkdir()
    said = "train is a folder with no .csv files in it (names starting with . or _ are skipped)"
    assert check_readable(str(tmp_path / "train"), "csv", "label", None, {}) == [said]
    with pytest.raises(DatasetError, match=r"train is a folder with no \.csv or \.parquet files"):
        folder_format(str(tmp_path / "train"), {})


def test_a_bad_value_is_named_by_file_and_row_within_it(tmp_path: Path) -> None:
    folder = parts(tmp_path / "train", "1,2,a\n", "3,4,b\n5,x,c\n")
    assert refusal(folder) == "train/part-1.csv: column 'petal' has a non-numeric value 'x' at row 2"


def test_labels_are_typed_alike_across_files(tmp_path: Path) -> None:
    numbers = parts(tmp_path / "numbers", "1,2,0\n", "3,4,1\n")
    assert read_table(numbers, "csv", "label", None, {}).y.tolist() == [0, 1]
    mixed = parts(tmp_path / "mixed", "1,2,0\n", "3,4,cat\n")  # one file's text makes them all text
    assert read_table(mixed, "csv", "label", None, {}).y.tolist() == ["0", "cat"]


def test_parquet_parts_read_as_one_table(tmp_path: Path) -> None:
    folder = tmp_path / "train"
    folder.mkdir()
    pq.write_table(pa.table({"a": [1.0, 2.0], "label": [0, 1]}), folder / "part-0.parquet")
    pq.write_table(pa.table({"a": [3.0], "label": [1]}), folder / "part-1.pq")
    pq.write_table(
        pa.table({"a": pa.array([], pa.float64()), "label": pa.array([], pa.int64())}),
        folder / "part-2.parquet",
    )
    table = read_table(str(folder), "parquet", "label", None, {})
    assert table.X.ravel().tolist() == [1.0, 2.0, 3.0]
    assert table.y.tolist() == [0, 1, 1]
    assert folder_format(str(folder), {}) == "parquet"


def test_a_folder_of_csv_and_parquet_files_is_refused(tmp_path: Path) -> None:
    folder = parts(tmp_path / "train", "1,2,a\n")
    pq.write_table(
        pa.table({"sepal": [1.0], "petal": [2.0], "label": ["a"]}), tmp_path / "train" / "x.parquet"
    )
    said = (
        "train holds both csv and parquet files (csv: part-0.csv; parquet: x.parquet): "
        "a folder is read as one format, keep one"
    )
    assert check_readable(folder, "csv", "label", None, {}) == [said]
    with pytest.raises(DatasetError) as caught:
        folder_format(folder, {})
    assert str(caught.value) == said


def test_a_folder_of_the_other_format_says_which(tmp_path: Path) -> None:
    folder = tmp_path / "train"
    folder.mkdir()
    pq.write_table(pa.table({"a": [1.0], "label": [0]}), folder / "part-0.parquet")
    assert check_readable(str(folder), "csv", "label", None, {}) == [
        "train holds parquet files (part-0.parquet), not csv files: name the format parquet"
    ]


def test_the_format_and_columns_of_a_folder_are_told_from_its_files(tmp_path: Path) -> None:
    folder = parts(tmp_path / "train", "", "1,2,a\n")
    assert folder_format(folder, {}) == "csv"
    assert columns(folder, "csv", {}) == ["sepal", "petal", "label"]
    assert folder_format(str(tmp_path / "train" / "part-1.csv"), {}) is None
    write(tmp_path / "pets" / "cat" / "1.png", "not read here")
    assert folder_format(str(tmp_path / "pets"), {}) == "imagefolder"


def test_target_values_read_every_file_of_a_folder(tmp_path: Path) -> None:
    folder = parts(tmp_path / "train", "1,2,a\n", "3,4,b\n1,1,a\n")
    found = target_values(folder, "csv", "label", {})
    assert found.values == ("a", "b")
    assert found.complete and found.rows == 3


def test_a_folder_streams_file_after_file_with_its_size_summed(tmp_path: Path) -> None:
    folder = parts(tmp_path / "train", "1,2,0\n3,4,1\n", "", "5,6,1\n")
    assert dataset_bytes(folder, {}) == sum(p.stat().st_size for p in (tmp_path / "train").iterdir())
    data = stream_table(folder, "csv", "label", None, {}, batch_rows=10)
    batches = list(data.batches())
    assert [len(batch.y) for batch in batches] == [2, 1]  # a batch holds rows of one file
    assert np.concatenate([batch.y for batch in batches]).tolist() == [0, 1, 1]
    assert data.stats().rows == 3


def test_a_streamed_folder_names_the_file_of_a_bad_value(tmp_path: Path) -> None:
    folder = parts(tmp_path / "train", "1,2,a\n", "3,4,b\n5,x,c\n")
    data = stream_table(folder, "csv", "label", None, {}, batch_rows=10)
    with pytest.raises(DatasetError) as caught:
        list(data.batches())
    assert str(caught.value) == "train/part-1.csv: column 'petal' has a non-numeric value 'x' at row 2"


def test_a_streamed_folder_names_a_file_with_other_columns(tmp_path: Path) -> None:
    folder = parts(tmp_path / "train", "1,2,a\n")
    write(tmp_path / "train" / "part-1.csv", "sepal,width,label\n1,2,c\n")
    with pytest.raises(DatasetError) as caught:
        stream_table(folder, "csv", "label", None, {}, batch_rows=10)
    assert str(caught.value).startswith("train/part-1.csv: its columns differ from those of train/part-0.csv")
