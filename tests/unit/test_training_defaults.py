"""What a training request that names no algorithm or format gets."""

from __future__ import annotations

import pytest

from aiservice.domain.training import format_of
from aiservice.infrastructure.training.catalog import default_algorithm, validate


@pytest.mark.parametrize(
    ("framework", "task", "images", "expected"),
    [
        ("sklearn", "classification", False, "sklearn.ensemble.RandomForestClassifier"),
        ("sklearn", "regression", False, "sklearn.ensemble.RandomForestRegressor"),
        ("xgboost", "classification", False, "XGBClassifier"),
        ("xgboost", "regression", False, "XGBRegressor"),
        ("lightgbm", "classification", False, "LGBMClassifier"),
        ("lightgbm", "regression", False, "LGBMRegressor"),
        ("pytorch", "classification", False, "mlp"),
        ("pytorch", "classification", True, "cnn"),
        ("keras", "regression", False, "mlp"),
        ("keras", "classification", True, "cnn"),
    ],
)
def test_each_trainable_framework_has_a_default_its_own_checks_accept(
    framework: str, task: str, images: bool, expected: str
) -> None:
    chosen = default_algorithm(framework, task, images)
    assert chosen == expected
    assert validate(framework, chosen, {}) == []


def test_a_framework_without_a_trainer_has_no_default() -> None:
    assert default_algorithm("onnx", "classification", False) is None


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        ("data/train.csv", "csv"),
        ("s3://bucket/train/part-0.parquet", "parquet"),
        ("s3://bucket/train/part-0.PQ", "parquet"),
        ("/srv/data/arrays.npz", "npz"),
        ("dataset://iris", None),
        ("s3://bucket/train/", None),
        ("notes.csv.txt", None),
    ],
)
def test_the_format_is_told_from_the_extension_only(path: str, expected: str | None) -> None:
    assert format_of(path) == expected
