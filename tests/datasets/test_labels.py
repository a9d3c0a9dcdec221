"""The target's distinct values, read at submission from the target alone: typed as the job reads them,
and bounded for a file too large to read whole."""

from __future__ import annotations

import io
import uuid
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from aiservice.infrastructure.datasets import DatasetError, read_table
from aiservice.infrastructure.datasets.labels import target_values
from tests.moto_s3 import MotoServer


def write_csv(path: Path, labels: list[str]) -> str:
    path.write_text("x,label\n" + "".join(f"{i},{label}\n" for i, label in enumerate(labels)))
    return str(path)


def test_csv_integer_text_becomes_the_integers_the_job_trains_on(tmp_path: Path) -> None:
    uri = write_csv(tmp_path / "d.csv", ["2", "0", "01", "2", "1"])
    found = target_values(uri, "csv", "label", {})
    assert found.values == (0, 1, 2)
    assert set(found.values) == set(read_table(uri, "csv", "label", None, {}).y.tolist())
    assert (found.rows, found.complete) == (5, True)
    assert found.column == "column 'label' of d.csv"


def test_csv_labels_that_are_not_all_integers_stay_text(tmp_path: Path) -> None:
    found = target_values(write_csv(tmp_path / "d.csv", ["1", "setosa", "1"]), "csv", "label", {})
    assert found.values == ("1", "setosa")


def test_empty_targets_are_left_for_the_job_to_report_with_their_row(tmp_path: Path) -> None:
    found = target_values(write_csv(tmp_path / "d.csv", ["a", "", "b"]), "csv", "label", {})
    assert found.values == ("a", "b")


def test_a_csv_past_the_bound_is_read_only_to_it(tmp_path: Path) -> None:
    labels = ["0", "1", "2"] * 200_000 + ["7"]  # about 4.5 MB; 7 only in the last row
    uri = write_csv(tmp_path / "big.csv", labels)
    first = target_values(uri, "csv", "label", {}, scan_bytes=1 << 20)
    assert first.values == (0, 1, 2)
    assert not first.complete
    assert 0 < first.rows < len(labels)
    whole = target_values(uri, "csv", "label", {})
    assert whole.values == (0, 1, 2, 7)
    assert whole.complete and whole.rows == len(labels)


def test_too_many_distinct_values_stop_the_read(tmp_path: Path) -> None:
    uri = write_csv(tmp_path / "d.csv", [f"{i / 7:.5f}" for i in range(50_000)])
    found = target_values(uri, "csv", "label", {}, max_distinct=100)
    assert not found.complete
    assert len(found.values) > 100


def test_parquet_reads_the_target_column_alone(tmp_path: Path) -> None:
    path = tmp_path / "d.parquet"
    labels = pa.array(["b", "a", None, "b"]).dictionary_encode()
    pq.write_table(pa.table({"x": [1.0, 2.0, 3.0, 4.0], "label": labels, "other": ["?"] * 4}), path)
    found = target_values(str(path), "parquet", "label", {})
    assert found.values == ("a", "b")
    assert found.column == "column 'label' of d.parquet"


def test_npz_labels_are_read_in_slices_of_y(tmp_path: Path) -> None:
    path = tmp_path / "d.npz"
    y = np.concatenate([np.arange(600_000) % 3, [9]])  # 4.8 MB of int64: more than one slice
    np.savez_compressed(path, X=np.zeros((len(y), 1), dtype=np.float32), y=y)
    whole = target_values(str(path), "npz", None, {})
    assert (whole.values, whole.rows, whole.complete) == ((0, 1, 2, 9), len(y), True)
    first = target_values(str(path), "npz", None, {}, scan_bytes=1)
    assert first.values == (0, 1, 2)
    assert not first.complete


def test_npz_text_labels_stay_text(tmp_path: Path) -> None:
    path = tmp_path / "d.npz"
    np.savez(path, X=np.zeros((3, 1)), y=np.array(["1", "0", "1"]))
    assert target_values(str(path), "npz", None, {}).values == ("0", "1")


def test_npz_object_labels_are_refused_as_the_job_refuses_them(tmp_path: Path) -> None:
    path = tmp_path / "d.npz"
    np.savez(path, X=np.zeros((2, 1)), y=np.array([{"a": 1}, None], dtype=object))
    with pytest.raises(DatasetError, match="not Python objects"):
        target_values(str(path), "npz", None, {})


def test_an_image_folders_labels_are_its_class_folders(tmp_path: Path) -> None:
    for label in ("cat", "dog"):
        (tmp_path / "images" / label).mkdir(parents=True)
        (tmp_path / "images" / label / "1.png").write_bytes(b"not decoded here")
    (tmp_path / "images" / ".hidden").mkdir()
    (tmp_path / "images" / ".hidden" / "1.png").write_bytes(b"")
    found = target_values(str(tmp_path / "images"), "imagefolder", None, {})
    assert found.values == ("cat", "dog")
    assert found.column == "the class folders of images"


def test_s3_parquet_and_npz_labels_are_read_through_s3(moto_server: MotoServer) -> None:
    bucket = f"labels-{uuid.uuid4().hex[:12]}"
    client = moto_server.client()
    client.create_bucket(Bucket=bucket)
    table = io.BytesIO()
    pq.write_table(pa.table({"x": [1.0, 2.0], "label": [1, 0]}), table)
    npz = io.BytesIO()
    np.savez(npz, X=np.zeros((2, 1)), y=np.array(["cat", "dog"]))
    client.put_object(Bucket=bucket, Key="d.parquet", Body=table.getvalue())
    client.put_object(Bucket=bucket, Key="d.npz", Body=npz.getvalue())
    options = moto_server.options.storage_options()
    assert target_values(f"s3://{bucket}/d.parquet", "parquet", "label", options).values == (0, 1)
    found = target_values(f"s3://{bucket}/d.npz", "npz", None, options)
    assert found.values == ("cat", "dog")
    assert found.column == f"array 'y' of s3://{bucket}/d.npz"
