"""What every part of a study reads the same way: the training part and the held-out part of its data,
and the cross-validation folds of the training part. The study's trial jobs and its final refit each
read the data themselves, so the split and the folds are seeded functions of the request alone."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from aiservice.domain.training import DatasetConfig
from aiservice.infrastructure.datasets.readers import Table, read_table

DEFAULT_VALIDATION_SPLIT = 0.2


def study_data(
    dataset: DatasetConfig, task: str, seed: int, storage_options: Callable[[str], dict[str, Any]]
) -> tuple[Table, Table]:
    """The training part and the held-out part: the ``validationPath``, else ``validationSplit`` (0.2)
    of the rows, stratified for classification, seeded."""

    def read(uri: str) -> Table:
        return read_table(uri, dataset.format, dataset.target, dataset.features, storage_options(uri))

    train = read(dataset.train_path)
    if dataset.validation_path:
        return train, read(dataset.validation_path)
    from sklearn.model_selection import train_test_split

    y = train.y
    stratify = y if task == "classification" and stratifiable(y) else None
    a, b, ya, yb = train_test_split(
        train.X,
        y,
        test_size=dataset.validation_split or DEFAULT_VALIDATION_SPLIT,
        random_state=seed,
        stratify=stratify,
    )
    return Table(a, ya, train.feature_names), Table(b, yb, train.feature_names)


def stratifiable(y: np.ndarray) -> bool:
    _, counts = np.unique(y, return_counts=True)
    return bool(len(counts) > 1 and counts.min() >= 2)


def study_folds(y: np.ndarray, task: str, cv_folds: int, seed: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """k shuffled, seeded folds (stratified for classification where every class can be in each)."""
    from sklearn.model_selection import KFold, StratifiedKFold

    k = max(2, min(cv_folds, len(y)))
    splitter: Any
    if task == "classification" and stratifiable(y):
        _, counts = np.unique(y, return_counts=True)
        k = max(2, min(k, int(counts.min())))
        splitter = StratifiedKFold(n_splits=k, shuffle=True, random_state=seed)
    else:
        splitter = KFold(n_splits=k, shuffle=True, random_state=seed)
    return [(a, b) for a, b in splitter.split(np.zeros((len(y), 1)), y)]
