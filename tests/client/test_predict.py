"""Predictions through the SDK against a live service: one input, batches cut into chunks and sent
concurrently (in input order, with a progress bar), a failed input raised or returned in its place, and
the problem of refused input with its fields."""

from __future__ import annotations

from typing import Any

import pandas as pd
import pytest
from sklearn.datasets import load_iris
from sklearn.linear_model import LogisticRegression

from aiservice.client import Prediction, ProblemError, ValidationError

FEATURES = ["sepal_length", "sepal_width", "petal_length", "petal_width"]
CLASSES = ["setosa", "versicolor", "virginica"]
X, Y = load_iris(return_X_y=True)
FRAME = pd.DataFrame(X, columns=FEATURES)
ESTIMATOR = LogisticRegression(max_iter=500).fit(FRAME, [CLASSES[y] for y in Y])


@pytest.fixture
def iris(sdk: Any) -> str:
    sdk.models.create("iris", "sklearn")
    sdk.models.upload_version("iris", ESTIMATOR)
    return "iris"


def test_one_input_answers_a_typed_prediction_with_its_confidence(sdk: Any, iris: str) -> None:
    row = FRAME.iloc[120]
    answer = sdk.predict(iris, row.to_dict(), include_confidence=True)
    assert isinstance(answer, Prediction)
    assert answer.prediction == ESTIMATOR.predict(FRAME.iloc[[120]])[0]
    assert answer.version == 1 and answer.confidence is not None
    assert set(answer.probabilities or {}) == set(CLASSES)
    assert repr(answer).startswith(f"Prediction(prediction='{answer.prediction}'")
    assert sdk.predict(iris, row).prediction == answer.prediction  # a pandas Series is one input too


def test_a_batch_is_chunked_and_concurrent_and_answers_in_input_order(sdk: Any, iris: str) -> None:
    rows = [dict(zip(FEATURES, x, strict=True)) for x in X]
    answers = sdk.batch_predict(iris, rows, chunk_size=16, concurrency=3, progress=True)
    assert [a.prediction for a in answers] == ESTIMATOR.predict(FRAME).tolist()


def test_a_failed_input_is_raised_or_returned_in_its_place(sdk: Any, iris: str) -> None:
    rows = [dict(zip(FEATURES, x, strict=True)) for x in X[:3]]
    rows[1] = {"sepal_length": 1.0}  # three features missing

    with pytest.raises(ValidationError) as caught:
        sdk.batch_predict(iris, rows)
    assert "input 1" in str(caught.value)

    answers = sdk.batch_predict(iris, rows, errors="return")
    assert isinstance(answers[0], Prediction) and isinstance(answers[2], Prediction)
    assert isinstance(answers[1], ProblemError) and answers[1].status == 422


def test_refused_input_is_a_validation_error_naming_the_fields(sdk: Any, iris: str) -> None:
    with pytest.raises(ValidationError) as caught:
        sdk.predict(iris, {"sepal_length": "long", "petal_width": 1.0})
    fields = caught.value.fields
    assert any(name.endswith("sepal_length") for name in fields), fields
    assert any(name.endswith("sepal_width") for name in fields), fields
