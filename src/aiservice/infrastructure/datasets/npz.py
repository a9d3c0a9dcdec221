"""npz training data: arrays ``X`` (or ``x``) and ``y`` in one file, read whole; never unpickled."""

from __future__ import annotations

import zipfile
from typing import Any

import numpy as np

from aiservice.infrastructure.datasets.tables import DatasetError, Table, file_size


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


def check_npz(fs: Any, path: str, name: str, target: str | None, features: list[str] | None) -> list[str]:
    file_size(fs, path, name, "npz")
    with fs.open(path, "rb") as handle:
        npz_members(handle, name)
    return []


def read_npz(fs: Any, path: str, name: str, target: str | None, features: list[str] | None) -> Table:
    file_size(fs, path, name, "npz")
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
