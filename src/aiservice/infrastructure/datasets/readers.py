"""Training data from csv, parquet, npz files and image folders, local or on S3, as arrays.

``check_readable`` runs at submit time and reads only headers, so a bad column name fails the request,
not a worker minutes later. ``read_table`` runs in the worker and turns every problem it can name (file,
column, row) into a ``DatasetError`` with that message; I/O failures become ``DatasetError`` too.

Rows are numbered from 1, the first row of data (a csv's header is not a row).

csv and parquet files too large to hold are read batch by batch by ``streaming.stream_table``, with the
same checks and messages (``to_table`` with the batch's first row number); npz files and image folders
are always read whole here.
"""

from __future__ import annotations

import contextlib
import os
import warnings
import zipfile
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa  # type: ignore[import-untyped]
import pyarrow.compute as pc  # type: ignore[import-untyped]
import pyarrow.csv as pacsv  # type: ignore[import-untyped]
import pyarrow.parquet as pq  # type: ignore[import-untyped]

FORMATS = ("csv", "parquet", "npz", "imagefolder")
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png")
_CSV_BLOCK = 1 << 20  # the header check reads one block: a header longer than this is refused


@dataclass(frozen=True)
class Table:
    """Features ``X``: float32 ``(N, F)``, or ``(N, H, W, C)`` in [0, 1] for images; labels ``y`` ``(N,)``."""

    X: np.ndarray
    y: np.ndarray
    feature_names: list[str]


class DatasetError(Exception):
    """A dataset the job cannot use; the message names the file and column where it can."""


def check_readable(
    uri: str, format: str, target: str | None, features: list[str] | None, storage_options: dict[str, Any]
) -> list[str]:
    """Problems a job would hit, found from headers only (csv: its first block; parquet: its schema; npz:
    its member names; image folder: its listing and one image's header). Empty when the data looks usable."""
    name = display_name(uri)
    if format not in FORMATS:
        return [f"unknown format {format!r}: use one of {', '.join(FORMATS)}"]
    try:
        fs, path = filesystem(uri, storage_options)
        return _CHECKS[format](fs, path, name, target, features)
    except DatasetError as exc:
        return [str(exc)]
    except Exception as exc:  # OSError, botocore/aiohttp errors: the data is gone or S3 is down
        return [f"could not read {name}: {exc}"]


def read_table(
    uri: str,
    format: str,
    target: str | None,
    features: list[str] | None,
    storage_options: dict[str, Any],
    image_size: tuple[int, int] | None = None,
) -> Table:
    """The whole dataset as arrays. csv/parquet: ``target`` -> ``y`` as stored (numbers stay numbers, text
    stays text), ``features`` (default: every other column, in file order) -> ``X``. npz: arrays ``X``/``x``
    and ``y``. Image folder: ``root/<class>/*.{jpg,jpeg,png}`` as RGB, resized to ``image_size`` (H, W;
    default the first image's size), labels the class folder names."""
    name = display_name(uri)
    if format not in FORMATS:
        raise DatasetError(f"unknown format {format!r}: use one of {', '.join(FORMATS)}")
    with reading(name):
        fs, path = filesystem(uri, storage_options)
        if format == "imagefolder":
            return _read_images(fs, path, name, image_size)
        return _READERS[format](fs, path, name, target, features)


@contextlib.contextmanager
def reading(name: str) -> Iterator[None]:
    """I/O failures (OSError, botocore/aiohttp errors: the data is gone or S3 is down) as ``DatasetError``;
    running out of memory stays a ``MemoryError``, which the job reports as such."""
    try:
        yield
    except (DatasetError, MemoryError):
        raise
    except Exception as exc:
        raise DatasetError(f"could not read {name}: {exc}") from exc


def display_name(uri: str) -> str:
    """How messages name a dataset: the S3 URI, or a local file's own name (never the server's folders)."""
    return uri if "://" in uri else Path(uri).name


def dataset_files(fs: Any, root: str, name: str) -> list[tuple[str, str]]:
    """``(relative posix path, path)`` of every file under a folder, sorted, hidden entries skipped.

    Locally, symlinked folders are not entered and a symlinked file must stay inside the folder: the
    locator confined the folder, not what its links point at.
    """
    if "file" not in _protocols(fs):
        prefix = root.rstrip("/") + "/"
        found = ((path.removeprefix(prefix), path) for path in fs.find(root))
        return sorted((rel, path) for rel, path in found if not _hidden(rel))
    base = Path(root).resolve()
    files = []
    for folder, subfolders, names in os.walk(base):  # followlinks=False
        subfolders[:] = [sub for sub in subfolders if not sub.startswith(".")]
        for file_name in names:
            path = Path(folder, file_name)
            relative = path.relative_to(base).as_posix()
            if file_name.startswith("."):
                continue
            if not path.resolve().is_relative_to(base):
                raise DatasetError(f"{name}: {relative} links outside the dataset folder")
            files.append((relative, str(path)))
    return sorted(files)


def _protocols(fs: Any) -> tuple[str, ...]:
    protocol = fs.protocol
    return (protocol,) if isinstance(protocol, str) else tuple(protocol)


def _hidden(relative: str) -> bool:
    return any(part.startswith(".") for part in relative.split("/"))


def filesystem(uri: str, storage_options: dict[str, Any]) -> tuple[Any, str]:
    """The fsspec file system and path for ``uri``; s3fs is imported only for ``s3://``."""
    from fsspec.core import url_to_fs  # type: ignore[import-untyped]

    fs, path = url_to_fs(uri, **storage_options)
    return fs, path


def _file_size(fs: Any, path: str, name: str, format: str) -> int:
    info = fs.info(path)
    if info["type"] == "directory":
        raise DatasetError(f"{name} is a folder, not a {format} file")
    size = int(info["size"])
    if size == 0:
        raise DatasetError(f"{name} is empty: it has no rows")
    return size


# --- columns ---------------------------------------------------------------------------------------------


def _column_problems(columns: list[str], target: str | None, features: list[str] | None) -> list[str]:
    problems = []
    duplicates = sorted(column for column, count in Counter(columns).items() if count > 1)
    if duplicates:
        problems.append(f"columns appear more than once: {', '.join(duplicates)}")
    if target is None:
        problems.append("a target column is needed")
    elif target not in columns:
        problems.append(f"has no target column {target!r} (columns: {', '.join(columns)})")
    if features is not None:
        unknown = [feature for feature in features if feature not in columns]
        if unknown:
            problems.append(f"has no feature columns {', '.join(map(repr, unknown))}")
        if target is not None and target in features:
            problems.append(f"the target {target!r} cannot also be a feature")
    if not _features(columns, target, features):
        problems.append("has no feature columns besides the target")
    return problems


def _features(columns: list[str], target: str | None, features: list[str] | None) -> list[str]:
    return list(features) if features is not None else [column for column in columns if column != target]


def pick_columns(
    columns: list[str], name: str, target: str | None, features: list[str] | None
) -> tuple[str, list[str]]:
    problems = _column_problems(columns, target, features)
    if problems or target is None:
        raise DatasetError(f"{name}: {'; '.join(problems)}")
    return target, _features(columns, target, features)


def feature_values(column: pa.ChunkedArray, label: str, name: str, first_row: int = 1) -> np.ndarray:
    """A feature column as float64, or the first row that is not a number (``first_row``: the number of
    the column's first row, for a batch read from further down a file)."""
    kind = column.type
    if pa.types.is_string(kind) or pa.types.is_large_string(kind):
        column = _parse_floats(column, label, name, first_row)
    elif not any(
        test(kind)
        for test in (pa.types.is_integer, pa.types.is_floating, pa.types.is_boolean, pa.types.is_null)
    ):
        raise DatasetError(f"{name}: column {label!r} holds {kind} values, not numbers")
    if column.null_count:
        row = pc.index(pc.is_null(column), True).as_py()
        raise DatasetError(f"{name}: column {label!r} has a missing value at row {first_row + row}")
    values: np.ndarray = column.to_numpy().astype(np.float64, copy=False)
    nan = np.flatnonzero(np.isnan(values))
    if nan.size:
        raise DatasetError(f"{name}: column {label!r} has a missing value (NaN) at row {first_row + nan[0]}")
    return values


def _parse_floats(column: pa.ChunkedArray, label: str, name: str, first_row: int) -> pa.ChunkedArray:
    try:
        return pc.cast(column, pa.float64())
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        pass
    offset = 0
    for chunk in column.chunks:
        if not _parses(chunk):
            row = offset + _first_unparsable(chunk)
            value = str(column[row].as_py())
            shown = value if len(value) <= 40 else value[:40] + "..."
            raise DatasetError(
                f"{name}: column {label!r} has a non-numeric value {shown!r} at row {first_row + row}"
            )
        offset += len(chunk)
    raise DatasetError(f"{name}: column {label!r} could not be read as numbers")


def _parses(values: pa.Array) -> bool:
    try:
        pc.cast(values, pa.float64())
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        return False
    return True


def _first_unparsable(chunk: pa.Array) -> int:
    """Binary search with pyarrow's own parser, so the row found is the one pyarrow refused."""
    low, high = 0, len(chunk)  # chunk[low:high] holds a bad value
    while high - low > 1:
        middle = (low + high) // 2
        if _parses(chunk.slice(low, middle - low)):
            low = middle
        else:
            high = middle
    return low


# How a text target is typed, most specific first: integers, else floats, else text.
LABEL_KINDS = (pa.int64(), pa.float64(), pa.string())


def is_text(kind: pa.DataType) -> bool:
    return bool(pa.types.is_string(kind) or pa.types.is_large_string(kind))


def typed_labels(
    column: pa.ChunkedArray, label: str, name: str, first_row: int, kind: pa.DataType
) -> tuple[np.ndarray, pa.DataType]:
    """The target as stored, and the kind text labels were given (``kind`` itself for a column that is
    not text). Text whose values all parse as integers (else as floats) becomes numbers, as a csv's labels
    are text until parsed; ``kind`` (one of ``LABEL_KINDS``) is the most specific type text is tried as:
    a stream fixes it over the whole file, so that every batch is typed alike."""
    text = is_text(column.type)
    empty = pc.is_null(column)
    if text:
        empty = pc.or_(empty, pc.equal(column, ""))
    if pc.any(empty).as_py():
        row = pc.index(empty, True).as_py()
        raise DatasetError(f"{name}: target column {label!r} is empty at row {first_row + row}")
    if not text:
        labels: np.ndarray = column.to_numpy()
        return labels, kind
    for number in LABEL_KINDS[LABEL_KINDS.index(kind) : -1]:
        try:
            return np.asarray(pc.cast(column, number).to_numpy()), number
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
            continue
    return np.asarray(column.to_numpy(zero_copy_only=False), dtype=str), LABEL_KINDS[-1]


def to_table(
    table: pa.Table,
    name: str,
    target: str,
    features: list[str],
    first_row: int = 1,
    kind: pa.DataType = LABEL_KINDS[0],
) -> Table:
    """Arrow columns as a ``Table``, every problem named by column and row (``first_row``: the number of
    ``table``'s first row in its file; ``kind``: as for ``typed_labels``)."""
    if table.num_rows == 0:
        raise DatasetError(f"{name} has no rows")
    y, _ = typed_labels(table.column(target), target, name, first_row, kind)
    X = np.empty((table.num_rows, len(features)), dtype=np.float32)
    for index, feature in enumerate(features):
        X[:, index] = feature_values(table.column(feature), feature, name, first_row)
    return Table(X=X, y=y, feature_names=list(features))


# --- csv -------------------------------------------------------------------------------------------------


def csv_head(fs: Any, path: str, name: str) -> pa.RecordBatch:
    """The first block of rows (with the header's column names); refuses an empty or header-only file."""
    _file_size(fs, path, name, "csv")
    options = pacsv.ReadOptions(block_size=_CSV_BLOCK, use_threads=False)
    with fs.open(path, "rb") as handle:
        try:
            reader = pacsv.open_csv(handle, read_options=options)
        except pa.ArrowInvalid as exc:
            if "Empty CSV file" in str(exc):
                raise DatasetError(f"{name} has no rows") from exc
            raise DatasetError(f"{name} is not a readable csv file: {exc}") from exc
        for batch in reader:
            if batch.num_rows:
                return batch
    raise DatasetError(f"{name} has no rows")


def _check_csv(fs: Any, path: str, name: str, target: str | None, features: list[str] | None) -> list[str]:
    head = csv_head(fs, path, name)
    columns = head.schema.names
    problems = _column_problems(columns, target, features)
    if problems or target is None:
        return [f"{name}: {problem}" for problem in problems]
    to_table(pa.Table.from_batches([head]), name, target, _features(columns, target, features))
    return []


def _read_csv(fs: Any, path: str, name: str, target: str | None, features: list[str] | None) -> Table:
    target, chosen = pick_columns(csv_head(fs, path, name).schema.names, name, target, features)
    # Feature columns parse straight to float64; the target as text, typed afterwards by typed_labels.
    types = {feature: pa.float64() for feature in chosen} | {target: pa.string()}
    try:
        table = _read_csv_columns(fs, path, [target, *chosen], types)
    except pa.ArrowInvalid as exc:
        _raise_for_bad_numbers(fs, path, name, chosen)
        raise DatasetError(f"{name} is not a readable csv file: {exc}") from exc
    return to_table(table, name, target, chosen)


def _raise_for_bad_numbers(fs: Any, path: str, name: str, features: list[str]) -> None:
    """Name the column and row pyarrow refused, reading the features as text. Returns when the file's
    shape is the problem (a row with too many fields), which pyarrow's own message describes."""
    try:
        text = _read_csv_columns(fs, path, features, dict.fromkeys(features, pa.string()))
    except pa.ArrowInvalid:
        return
    for feature in features:
        feature_values(text.column(feature), feature, name)


def _read_csv_columns(fs: Any, path: str, columns: list[str], types: dict[str, pa.DataType]) -> pa.Table:
    convert = pacsv.ConvertOptions(column_types=types, include_columns=columns)
    with fs.open(path, "rb") as handle:
        return pacsv.read_csv(handle, convert_options=convert)


# --- parquet ---------------------------------------------------------------------------------------------


def open_parquet(fs: Any, path: str, name: str) -> Any:
    """The file, opened for reading; refuses a folder or an empty file."""
    _file_size(fs, path, name, "parquet")
    return fs.open(path, "rb")


def parquet_file(handle: Any, name: str, **options: Any) -> pq.ParquetFile:
    """``handle`` as a ``pyarrow.parquet.ParquetFile`` (``options`` are its own), or a ``DatasetError``."""
    try:
        return pq.ParquetFile(handle, **options)
    except pa.ArrowInvalid as exc:
        raise DatasetError(f"{name} is not a valid parquet file") from exc


def _check_parquet(
    fs: Any, path: str, name: str, target: str | None, features: list[str] | None
) -> list[str]:
    with open_parquet(fs, path, name) as handle:
        parquet = parquet_file(handle, name)
        problems = [
            f"{name}: {problem}" for problem in _column_problems(parquet.schema_arrow.names, target, features)
        ]
        if parquet.metadata.num_rows == 0:
            problems.append(f"{name} has no rows")
    return problems


def _read_parquet(fs: Any, path: str, name: str, target: str | None, features: list[str] | None) -> Table:
    with open_parquet(fs, path, name) as handle:
        parquet = parquet_file(handle, name)
        target, chosen = pick_columns(parquet.schema_arrow.names, name, target, features)
        table = parquet.read(columns=[target, *chosen])
    return to_table(table, name, target, chosen)


# --- npz -------------------------------------------------------------------------------------------------


def npz_members(handle: Any, name: str) -> tuple[str, str]:
    """The names of the features and labels arrays (``X`` or ``x``, and ``y``)."""
    try:
        members = [member.removesuffix(".npy") for member in zipfile.ZipFile(handle).namelist()]
    except zipfile.BadZipFile as exc:
        raise DatasetError(f"{name} is not a valid npz file") from exc
    handle.seek(0)
    features = next((member for member in ("X", "x") if member in members), None)
    if features is None or "y" not in members:
        found = ", ".join(sorted(members)) or "none"
        raise DatasetError(f"{name} needs arrays named 'X' and 'y' (found: {found})")
    return features, "y"


def _check_npz(fs: Any, path: str, name: str, target: str | None, features: list[str] | None) -> list[str]:
    _file_size(fs, path, name, "npz")
    with fs.open(path, "rb") as handle:
        npz_members(handle, name)
    return []


def _read_npz(fs: Any, path: str, name: str, target: str | None, features: list[str] | None) -> Table:
    _file_size(fs, path, name, "npz")
    with fs.open(path, "rb") as handle:
        x_name, y_name = npz_members(handle, name)
        try:
            with np.load(handle, allow_pickle=False) as archive:
                X, y = archive[x_name], archive[y_name]
        except ValueError as exc:  # object arrays: loading them would unpickle
            raise DatasetError(f"{name}: arrays must hold numbers or text, not Python objects") from exc
    return _npz_table(X, y, name, x_name)


def _npz_table(X: np.ndarray, y: np.ndarray, name: str, x_name: str) -> Table:
    if not (np.issubdtype(X.dtype, np.number) or X.dtype == np.bool_):
        raise DatasetError(f"{name}: array {x_name!r} holds {X.dtype} values, not numbers")
    if X.ndim == 3:  # (N, H, W) grey images
        X = X[..., np.newaxis]
    if X.ndim not in (2, 4):
        raise DatasetError(f"{name}: array {x_name!r} must be (N, F) or (N, H, W, C), not {X.shape}")
    if y.ndim == 2 and y.shape[1] == 1:
        y = y.ravel()
    if y.ndim != 1 or len(y) != len(X):
        raise DatasetError(f"{name}: array 'y' must be ({len(X)},) to match {x_name!r}, not {y.shape}")
    if len(X) == 0:
        raise DatasetError(f"{name} has no rows")
    scaled = X.astype(np.float32) / np.float32(255) if X.ndim == 4 and X.dtype == np.uint8 else X
    values = np.asarray(scaled, dtype=np.float32)
    bad = np.flatnonzero(np.isnan(values.reshape(len(values), -1)).any(axis=1))
    if bad.size:
        raise DatasetError(f"{name}: array {x_name!r} has a missing value (NaN) at row {bad[0] + 1}")
    names = [f"f{index}" for index in range(values.shape[1])] if values.ndim == 2 else []
    return Table(X=values, y=y, feature_names=names)


# --- image folders ---------------------------------------------------------------------------------------


def image_files(fs: Any, root: str, name: str) -> list[tuple[str, str]]:
    """``(relative path, path)`` of each image in ``root/<class>/``, sorted; its class is the first part."""
    if not fs.isdir(root):
        raise DatasetError(f"{name} is not a folder of class folders")
    images = [
        (relative, path)
        for relative, path in dataset_files(fs, root, name)
        if "/" in relative and relative.lower().endswith(IMAGE_EXTENSIONS)
    ]
    if not images:
        raise DatasetError(f"{name} has no images: expected {name}/<class>/<image>.png or .jpg")
    return images


def _decode(fs: Any, path: str, shown: str, use: Callable[[Any], np.ndarray]) -> np.ndarray:
    """Open one image with Pillow and hand it to ``use``, refusing decompression bombs
    (``Image.MAX_IMAGE_PIXELS``) and anything that is not a png or jpeg."""
    from PIL import Image, UnidentifiedImageError

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with fs.open(path, "rb") as handle, Image.open(handle, formats=("PNG", "JPEG")) as image:
                return use(image)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise DatasetError(f"{shown} has too many pixels to decode safely") from exc
    except (UnidentifiedImageError, SyntaxError, ValueError) as exc:
        raise DatasetError(f"{shown} is not a readable png or jpeg image") from exc
    except OSError as exc:  # truncated image data, or the file went away
        raise DatasetError(f"{shown} could not be read: {exc}") from exc


def _size(image: Any) -> np.ndarray:
    return np.asarray(image.size)  # (width, height), read from the header alone


def _check_images(fs: Any, path: str, name: str, target: str | None, features: list[str] | None) -> list[str]:
    relative, first = image_files(fs, path, name)[0]
    _decode(fs, first, f"{name}/{relative}", _size)
    return []


def _read_images(fs: Any, root: str, name: str, image_size: tuple[int, int] | None) -> Table:
    images = image_files(fs, root, name)
    if image_size is None:
        width, height = _decode(fs, images[0][1], f"{name}/{images[0][0]}", _size)
        image_size = (int(height), int(width))
    height, width = image_size
    X = np.empty((len(images), height, width, 3), dtype=np.float32)

    def pixels(image: Any) -> np.ndarray:
        return np.asarray(image.convert("RGB").resize((width, height)), dtype=np.float32)

    for index, (relative, path) in enumerate(images):
        X[index] = _decode(fs, path, f"{name}/{relative}", pixels)
    X *= np.float32(1 / 255)
    y = np.asarray([relative.split("/", 1)[0] for relative, _ in images], dtype=str)
    return Table(X=X, y=y, feature_names=[])


_CHECKS: dict[str, Callable[[Any, str, str, str | None, list[str] | None], list[str]]] = {
    "csv": _check_csv,
    "parquet": _check_parquet,
    "npz": _check_npz,
    "imagefolder": _check_images,
}
_READERS: dict[str, Callable[[Any, str, str, str | None, list[str] | None], Table]] = {
    "csv": _read_csv,
    "parquet": _read_parquet,
    "npz": _read_npz,
}
