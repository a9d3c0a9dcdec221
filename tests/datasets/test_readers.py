"""Readers turn real files into arrays, and every unusable file into a message naming file, column, row."""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from aiservice.infrastructure.datasets import DatasetError, Table, check_readable, read_table

CSV = "sepal,petal,label\n5.1,1.4,setosa\n7.0,4.7,versicolor\n6.3,6.0,virginica\n"


def write(path: Path, text: str) -> str:
    path.write_text(text)
    return str(path)


def read(
    uri: str, format: str = "csv", target: str | None = "label", features: list[str] | None = None
) -> Table:
    return read_table(uri, format, target, features, {})


def problems(
    uri: str, format: str = "csv", target: str | None = "label", features: list[str] | None = None
) -> list[str]:
    return check_readable(uri, format, target, features, {})


def refusal(
    uri: str, format: str = "csv", target: str | None = "label", features: list[str] | None = None
) -> str:
    with pytest.raises(DatasetError) as caught:
        read(uri, format, target, features)
    return str(caught.value)


# --- csv ---


def test_csv_features_become_float32_and_string_labels_stay_strings(tmp_path: Path) -> None:
    table = read(write(tmp_path / "iris.csv", CSV))
    assert table.X.dtype == np.float32
    np.testing.assert_allclose(table.X, [[5.1, 1.4], [7.0, 4.7], [6.3, 6.0]], rtol=1e-6)
    assert table.y.tolist() == ["setosa", "versicolor", "virginica"]
    assert table.feature_names == ["sepal", "petal"]


def test_csv_numeric_labels_stay_numbers(tmp_path: Path) -> None:
    table = read(write(tmp_path / "d.csv", "a,label\n1,0\n2,1\n3,1\n"))
    assert table.y.dtype == np.int64
    assert table.y.tolist() == [0, 1, 1]


def test_csv_features_are_taken_in_the_order_given(tmp_path: Path) -> None:
    table = read(write(tmp_path / "iris.csv", CSV), features=["petal", "sepal"])
    assert table.feature_names == ["petal", "sepal"]
    np.testing.assert_allclose(table.X[0], [1.4, 5.1], rtol=1e-6)


def test_csv_has_no_problems_when_usable(tmp_path: Path) -> None:
    assert problems(write(tmp_path / "iris.csv", CSV)) == []


def test_csv_missing_target_is_a_problem_naming_the_column(tmp_path: Path) -> None:
    found = problems(write(tmp_path / "iris.csv", CSV), target="species")
    assert len(found) == 1
    assert "iris.csv" in found[0]
    assert "'species'" in found[0]


def test_csv_unknown_feature_columns_are_a_problem(tmp_path: Path) -> None:
    found = problems(write(tmp_path / "iris.csv", CSV), features=["sepal", "width"])
    assert found == ["iris.csv: has no feature columns 'width'"]


def test_csv_missing_target_is_refused_by_the_reader(tmp_path: Path) -> None:
    assert "'species'" in refusal(write(tmp_path / "iris.csv", CSV), target="species")


def test_csv_non_numeric_value_names_column_and_row(tmp_path: Path) -> None:
    message = refusal(write(tmp_path / "iris.csv", CSV.replace("6.3,6.0", "6.3,six")))
    assert message == "iris.csv: column 'petal' has a non-numeric value 'six' at row 3"


def test_csv_non_numeric_value_far_down_a_large_file_names_its_row(tmp_path: Path) -> None:
    """pyarrow types columns from the first block: a bad value later must still be found and named."""
    rows = [f"{i},{i % 3}\n" for i in range(200_000)]
    rows[150_000] = "oops,1\n"
    message = refusal(write(tmp_path / "big.csv", "a,label\n" + "".join(rows)))
    assert message == "big.csv: column 'a' has a non-numeric value 'oops' at row 150001"


def test_csv_check_finds_a_non_numeric_value_in_the_first_block(tmp_path: Path) -> None:
    found = problems(write(tmp_path / "iris.csv", CSV.replace("6.3,6.0", "6.3,six")))
    assert found == ["iris.csv: column 'petal' has a non-numeric value 'six' at row 3"]


def test_csv_missing_feature_value_names_column_and_row(tmp_path: Path) -> None:
    message = refusal(write(tmp_path / "iris.csv", CSV.replace("7.0,4.7", "7.0,")))
    assert message == "iris.csv: column 'petal' has a missing value at row 2"


def test_csv_missing_label_names_its_row(tmp_path: Path) -> None:
    message = refusal(write(tmp_path / "iris.csv", CSV.replace("versicolor", "")))
    assert message == "iris.csv: target column 'label' is empty at row 2"


def test_csv_empty_file_has_no_rows(tmp_path: Path) -> None:
    uri = write(tmp_path / "empty.csv", "")
    assert refusal(uri) == "empty.csv is empty: it has no rows"
    assert problems(uri) == ["empty.csv is empty: it has no rows"]


def test_csv_header_only_has_no_rows(tmp_path: Path) -> None:
    uri = write(tmp_path / "header.csv", "sepal,petal,label\n")
    assert refusal(uri) == "header.csv has no rows"
    assert problems(uri) == ["header.csv has no rows"]


def test_csv_row_with_too_many_fields_is_refused_with_pyarrows_reason(tmp_path: Path) -> None:
    message = refusal(write(tmp_path / "iris.csv", CSV + "1,2,x,extra\n"))
    assert message.startswith("iris.csv is not a readable csv file")
    assert "Expected 3 columns, got 4" in message


def test_csv_row_with_too_many_fields_after_the_first_block_is_refused(tmp_path: Path) -> None:
    rows = [f"{i},{i % 3}\n" for i in range(200_000)]
    rows[150_000] = "1,2,3\n"
    message = refusal(write(tmp_path / "big.csv", "a,label\n" + "".join(rows)))
    assert message.startswith("big.csv is not a readable csv file")
    assert "Expected 2 columns, got 3" in message


def test_csv_target_cannot_also_be_a_feature(tmp_path: Path) -> None:
    assert "cannot also be a feature" in refusal(
        write(tmp_path / "iris.csv", CSV), features=["sepal", "label"]
    )


def test_a_missing_file_is_a_dataset_error(tmp_path: Path) -> None:
    assert refusal(str(tmp_path / "gone.csv")).startswith("could not read gone.csv")


# --- parquet ---


def _parquet(path: Path, columns: dict[str, list[object]]) -> str:
    pq.write_table(pa.table(columns), path)
    return str(path)


def test_parquet_keeps_types_and_column_order(tmp_path: Path) -> None:
    uri = _parquet(tmp_path / "d.parquet", {"a": [1, 2], "b": [0.5, 1.5], "label": ["x", "y"]})
    table = read(uri, "parquet")
    assert table.X.dtype == np.float32
    assert table.X.tolist() == [[1.0, 0.5], [2.0, 1.5]]
    assert table.y.tolist() == ["x", "y"]
    assert table.feature_names == ["a", "b"]
    assert problems(uri, "parquet") == []


def test_parquet_integer_labels_stay_integers(tmp_path: Path) -> None:
    table = read(_parquet(tmp_path / "d.parquet", {"a": [1.0, 2.0], "label": [3, 4]}), "parquet")
    assert table.y.tolist() == [3, 4]
    assert np.issubdtype(table.y.dtype, np.integer)


def test_parquet_missing_target_is_a_problem(tmp_path: Path) -> None:
    uri = _parquet(tmp_path / "d.parquet", {"a": [1.0], "label": ["x"]})
    assert problems(uri, "parquet", target="species") == [
        "d.parquet: has no target column 'species' (columns: a, label)"
    ]


def test_parquet_text_feature_names_column_and_row(tmp_path: Path) -> None:
    uri = _parquet(tmp_path / "d.parquet", {"a": ["1", "2.5", "n/a"], "label": ["x", "y", "z"]})
    assert refusal(uri, "parquet") == "d.parquet: column 'a' has a non-numeric value 'n/a' at row 3"


def test_parquet_nan_feature_is_a_missing_value(tmp_path: Path) -> None:
    uri = _parquet(tmp_path / "d.parquet", {"a": [1.0, float("nan")], "label": ["x", "y"]})
    assert refusal(uri, "parquet") == "d.parquet: column 'a' has a missing value (NaN) at row 2"


def test_parquet_null_feature_is_a_missing_value(tmp_path: Path) -> None:
    uri = _parquet(tmp_path / "d.parquet", {"a": [1.0, None], "label": ["x", "y"]})
    assert refusal(uri, "parquet") == "d.parquet: column 'a' has a missing value at row 2"


def test_parquet_without_rows_is_refused(tmp_path: Path) -> None:
    uri = str(tmp_path / "d.parquet")
    pq.write_table(pa.table({"a": pa.array([], pa.float64()), "label": pa.array([], pa.string())}), uri)
    assert refusal(uri, "parquet") == "d.parquet has no rows"
    assert problems(uri, "parquet") == ["d.parquet has no rows"]


def test_a_csv_is_not_a_parquet_file(tmp_path: Path) -> None:
    uri = write(tmp_path / "iris.parquet", CSV)
    assert refusal(uri, "parquet") == "iris.parquet is not a valid parquet file"
    assert problems(uri, "parquet") == ["iris.parquet is not a valid parquet file"]


# --- npz ---


def test_npz_reads_X_and_y(tmp_path: Path) -> None:
    uri = str(tmp_path / "d.npz")
    np.savez(uri, X=np.arange(6, dtype=np.float64).reshape(3, 2), y=np.array(["a", "b", "a"]))
    table = read(uri, "npz", target=None, features=["ignored"])
    assert table.X.dtype == np.float32
    assert table.X.tolist() == [[0, 1], [2, 3], [4, 5]]
    assert table.y.tolist() == ["a", "b", "a"]
    assert table.feature_names == ["f0", "f1"]
    assert problems(uri, "npz", target=None) == []


def test_npz_accepts_lowercase_x(tmp_path: Path) -> None:
    uri = str(tmp_path / "d.npz")
    np.savez_compressed(uri, x=np.ones((2, 3)), y=np.array([0, 1]))
    assert read(uri, "npz", target=None).X.shape == (2, 3)


def test_npz_without_y_names_what_it_found(tmp_path: Path) -> None:
    uri = str(tmp_path / "d.npz")
    np.savez(uri, X=np.ones((2, 3)), labels=np.array([0, 1]))
    expected = "d.npz needs arrays named 'X' and 'y' (found: X, labels)"
    assert refusal(uri, "npz", target=None) == expected
    assert problems(uri, "npz", target=None) == [expected]


def test_npz_that_is_not_a_zip_is_refused(tmp_path: Path) -> None:
    uri = str(tmp_path / "d.npz")
    np.save(tmp_path / "d.npy", np.ones(3))
    (tmp_path / "d.npy").rename(uri)
    assert refusal(uri, "npz", target=None) == "d.npz is not a valid npz file"


def test_npz_with_object_arrays_is_refused_without_unpickling(tmp_path: Path) -> None:
    uri = str(tmp_path / "d.npz")
    np.savez(uri, X=np.ones((2, 1)), y=np.array([{"a": 1}, None], dtype=object))
    assert "not Python objects" in refusal(uri, "npz", target=None)


def test_npz_lengths_must_match(tmp_path: Path) -> None:
    uri = str(tmp_path / "d.npz")
    np.savez(uri, X=np.ones((3, 2)), y=np.array([0, 1]))
    assert "must be (3,)" in refusal(uri, "npz", target=None)


def test_npz_empty_zip_is_refused(tmp_path: Path) -> None:
    uri = str(tmp_path / "d.npz")
    zipfile.ZipFile(uri, "w").close()
    assert refusal(uri, "npz", target=None) == "d.npz needs arrays named 'X' and 'y' (found: none)"


# --- image folders ---


def _png(path: Path, color: tuple[int, int, int], size: tuple[int, int] = (4, 3), mode: str = "RGB") -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new(mode, size, color if mode == "RGB" else color[0]).save(path)


@pytest.fixture
def images(tmp_path: Path) -> Path:
    root = tmp_path / "pets"
    _png(root / "cat" / "a.png", (255, 0, 0))
    _png(root / "cat" / "b.PNG", (255, 0, 0))
    _png(root / "dog" / "a.png", (0, 0, 255), mode="L")
    (root / "dog" / "notes.txt").write_text("not an image")
    (root / ".hidden").mkdir()
    return root


def test_image_folder_gives_rgb_pixels_in_0_1_and_class_labels(images: Path) -> None:
    table = read(str(images), "imagefolder", target=None)
    assert table.X.shape == (3, 3, 4, 3)  # N, H, W, C: the first image's size
    assert table.X.dtype == np.float32
    assert table.y.tolist() == ["cat", "cat", "dog"]
    np.testing.assert_allclose(table.X[0, 0, 0], [1.0, 0.0, 0.0])
    assert 0.0 <= table.X.min() and table.X.max() <= 1.0
    assert problems(str(images), "imagefolder", target=None) == []


def test_image_folder_resizes_to_the_size_asked(images: Path) -> None:
    table = read_table(str(images), "imagefolder", None, None, {}, image_size=(8, 6))
    assert table.X.shape == (3, 8, 6, 3)


def test_image_folder_without_images_is_refused(tmp_path: Path) -> None:
    (tmp_path / "pets" / "cat").mkdir(parents=True)
    uri = str(tmp_path / "pets")
    assert "pets has no images" in refusal(uri, "imagefolder", target=None)
    assert problems(uri, "imagefolder", target=None)[0].startswith("pets has no images")


def test_image_folder_with_a_broken_image_names_it(images: Path) -> None:
    (images / "dog" / "broken.png").write_bytes(b"not a png")
    assert (
        refusal(str(images), "imagefolder", target=None)
        == "pets/dog/broken.png is not a readable png or jpeg image"
    )


def test_image_decompression_bombs_are_refused(images: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 10)  # 12 pixels is over the limit: a "bomb" here
    assert (
        refusal(str(images), "imagefolder", target=None)
        == "pets/cat/a.png has too many pixels to decode safely"
    )


def test_image_links_pointing_outside_the_folder_are_refused(images: Path, tmp_path: Path) -> None:
    _png(tmp_path / "private" / "x.png", (0, 255, 0))
    (images / "cat" / "c.png").symlink_to(tmp_path / "private" / "x.png")
    assert (
        refusal(str(images), "imagefolder", target=None) == "pets: cat/c.png links outside the dataset folder"
    )


def test_unknown_format_is_refused(tmp_path: Path) -> None:
    uri = write(tmp_path / "iris.csv", CSV)
    assert problems(uri, "xlsx") == ["unknown format 'xlsx': use one of csv, parquet, npz, imagefolder"]
    assert "unknown format" in refusal(uri, "xlsx")
