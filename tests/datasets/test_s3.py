"""Datasets on S3, against a real S3 API (moto's server): resolve, fingerprint, read, and a server that
goes away between submit and read."""

from __future__ import annotations

import hashlib
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from aiservice.domain.errors import InvalidInput
from aiservice.infrastructure.datasets import (
    DatasetError,
    DatasetLocator,
    DatasetStore,
    check_readable,
    read_table,
)
from aiservice.infrastructure.datasets.readers import folder_format
from tests.moto_s3 import MotoServer

CSV = b"sepal,petal,label\n5.1,1.4,setosa\n7.0,4.7,versicolor\n6.3,6.0,virginica\n"
FIELD = "body.dataset.uri"
# One attempt and short timeouts, so a dead server fails the read in seconds, not minutes.
FAIL_FAST = {"config_kwargs": {"retries": {"max_attempts": 1}, "connect_timeout": 2, "read_timeout": 2}}


def _bucket(server: MotoServer, objects: dict[str, bytes]) -> str:
    bucket = f"data-{uuid.uuid4().hex[:12]}"
    client = server.client()
    client.create_bucket(Bucket=bucket)
    for key, data in objects.items():
        client.put_object(Bucket=bucket, Key=key, Body=data)
    return bucket


def _locator(server: MotoServer, tmp_path: Path) -> DatasetLocator:
    return DatasetLocator([tmp_path], DatasetStore(tmp_path / "uploaded"), server.options)


def test_an_s3_csv_resolves_fingerprints_and_reads(moto_server: MotoServer, tmp_path: Path) -> None:
    bucket = _bucket(moto_server, {"train.csv": CSV})
    locator = _locator(moto_server, tmp_path)
    uri = locator.resolve("acme", f"s3://{bucket}/train.csv", FIELD)
    assert uri == f"s3://{bucket}/train.csv"
    assert locator.fingerprint(uri) == {
        "uri": uri,
        "sha256": hashlib.sha256(CSV).hexdigest(),
        "sizeBytes": len(CSV),
    }
    options = locator.storage_options(uri)
    assert check_readable(uri, "csv", "label", None, options) == []
    table = read_table(uri, "csv", "label", None, options)
    np.testing.assert_allclose(table.X, [[5.1, 1.4], [7.0, 4.7], [6.3, 6.0]], rtol=1e-6)
    assert table.y.tolist() == ["setosa", "versicolor", "virginica"]


def test_an_s3_problem_names_the_object(moto_server: MotoServer, tmp_path: Path) -> None:
    bucket = _bucket(moto_server, {"train.csv": CSV})
    locator = _locator(moto_server, tmp_path)
    uri = locator.resolve("acme", f"s3://{bucket}/train.csv", FIELD)
    assert check_readable(uri, "csv", "species", None, locator.storage_options(uri)) == [
        f"{uri}: has no target column 'species' (columns: sepal, petal, label)"
    ]


def test_an_s3_image_folder_fingerprints_its_files(moto_server: MotoServer, tmp_path: Path) -> None:
    bucket = _bucket(moto_server, {"pets/cat/1.png": b"one", "pets/dog/1.png": b"two"})
    locator = _locator(moto_server, tmp_path)
    uri = locator.resolve("acme", f"s3://{bucket}/pets/", FIELD)
    assert uri == f"s3://{bucket}/pets"
    lines = (
        f"cat/1.png\0{hashlib.sha256(b'one').hexdigest()}\ndog/1.png\0{hashlib.sha256(b'two').hexdigest()}\n"
    )
    assert locator.fingerprint(uri) == {
        "uri": uri,
        "sha256": hashlib.sha256(lines.encode()).hexdigest(),
        "sizeBytes": 6,
    }


def test_a_missing_s3_key_is_refused_at_resolve(moto_server: MotoServer, tmp_path: Path) -> None:
    bucket = _bucket(moto_server, {"train.csv": CSV})
    with pytest.raises(InvalidInput) as caught:
        _locator(moto_server, tmp_path).resolve("acme", f"s3://{bucket}/missing.csv", FIELD)
    assert caught.value.errors[0].field == FIELD
    assert "does not exist" in caught.value.errors[0].message


def test_a_missing_bucket_is_refused_at_resolve(moto_server: MotoServer, tmp_path: Path) -> None:
    with pytest.raises(InvalidInput):
        _locator(moto_server, tmp_path).resolve("acme", "s3://no-such-bucket/train.csv", FIELD)


def test_an_object_uploaded_after_a_first_look_is_found(moto_server: MotoServer, tmp_path: Path) -> None:
    """Listings are not cached: a long-lived server sees objects that appear later."""
    bucket = _bucket(moto_server, {"train.csv": CSV})
    locator = _locator(moto_server, tmp_path)
    with pytest.raises(InvalidInput):
        locator.resolve("acme", f"s3://{bucket}/later.csv", FIELD)
    moto_server.client().put_object(Bucket=bucket, Key="later.csv", Body=CSV)
    assert locator.resolve("acme", f"s3://{bucket}/later.csv", FIELD) == f"s3://{bucket}/later.csv"


def test_s3_going_away_before_the_read_is_a_clear_dataset_error(
    start_moto: Callable[[], MotoServer], tmp_path: Path
) -> None:
    server = start_moto()
    bucket = _bucket(server, {"train.csv": CSV})
    locator = _locator(server, tmp_path)
    uri = locator.resolve("acme", f"s3://{bucket}/train.csv", FIELD)
    server.stop()
    started = time.monotonic()
    with pytest.raises(DatasetError) as caught:
        read_table(uri, "csv", "label", None, locator.storage_options(uri) | FAIL_FAST)
    assert str(caught.value).startswith(f"could not read {uri}: ")
    assert "Could not connect" in str(caught.value)
    assert time.monotonic() - started < 30


def _png(color: tuple[int, int, int]) -> bytes:
    from io import BytesIO

    from PIL import Image

    out = BytesIO()
    Image.new("RGB", (4, 3), color).save(out, format="PNG")
    return out.getvalue()


HEADER = b"sepal,petal,label\n"


def test_an_s3_prefix_of_csv_parts_reads_as_one_table(moto_server: MotoServer, tmp_path: Path) -> None:
    bucket = _bucket(
        moto_server,
        {
            "train/part-0.csv": HEADER + b"5.1,1.4,setosa\n",
            "train/part-1.csv": HEADER + b"7.0,4.7,versicolor\n",
            "train/_SUCCESS": b"",
            "train.csv": HEADER + b"0,0,not-read\n",  # beside the prefix, not under it
            "training/part-0.csv": HEADER + b"0,0,not-read\n",
        },
    )
    locator = _locator(moto_server, tmp_path)
    uri = locator.resolve("acme", f"s3://{bucket}/train/", FIELD)
    assert uri == f"s3://{bucket}/train"
    options = locator.storage_options(uri)
    assert check_readable(uri, "csv", "label", None, options) == []
    table = read_table(uri, "csv", "label", None, options)
    np.testing.assert_allclose(table.X, [[5.1, 1.4], [7.0, 4.7]], rtol=1e-6)
    assert table.y.tolist() == ["setosa", "versicolor"]


def test_an_s3_part_with_other_columns_is_named_by_its_uri(moto_server: MotoServer, tmp_path: Path) -> None:
    bucket = _bucket(
        moto_server,
        {
            "train/part-0.csv": HEADER + b"5.1,1.4,setosa\n",
            "train/part-1.csv": b"sepal,label\n7.0,versicolor\n",
        },
    )
    locator = _locator(moto_server, tmp_path)
    uri = locator.resolve("acme", f"s3://{bucket}/train/", FIELD)
    [problem] = check_readable(uri, "csv", "label", None, locator.storage_options(uri))
    assert problem.startswith(
        f"{uri}/part-1.csv: its columns differ from those of {uri}/part-0.csv, the folder's first file "
        "(lacks petal)"
    )


def test_an_empty_s3_prefix_is_refused_naming_the_field(moto_server: MotoServer, tmp_path: Path) -> None:
    bucket = _bucket(moto_server, {"train/part-0.csv": CSV})
    with pytest.raises(InvalidInput) as caught:
        _locator(moto_server, tmp_path).resolve("acme", f"s3://{bucket}/val/", FIELD)
    assert caught.value.errors[0].field == FIELD
    assert caught.value.errors[0].message == (
        f"s3://{bucket}/val/ is an empty prefix: no objects under it, or none this server may read"
    )


def test_an_s3_image_prefix_reads_as_an_image_folder(moto_server: MotoServer, tmp_path: Path) -> None:
    bucket = _bucket(
        moto_server,
        {
            "pets/cat/1.png": _png((255, 0, 0)),
            "pets/cat/2.png": _png((250, 0, 0)),
            "pets/dog/1.png": _png((0, 0, 255)),
        },
    )
    locator = _locator(moto_server, tmp_path)
    uri = locator.resolve("acme", f"s3://{bucket}/pets/", FIELD)
    options = locator.storage_options(uri)
    assert folder_format(uri, options) == "imagefolder"
    assert check_readable(uri, "imagefolder", None, None, options) == []
    table = read_table(uri, "imagefolder", None, None, options)
    assert table.X.shape == (3, 3, 4, 3)
    assert table.y.tolist() == ["cat", "cat", "dog"]
    np.testing.assert_allclose(table.X[2, 0, 0], [0, 0, 1])
