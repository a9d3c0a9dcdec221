"""Evaluation metrics: defined where the data allows, left out where it does not, never a crash."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import f1_score, roc_auc_score

from aiservice.infrastructure.training.metrics import classification_metrics, regression_metrics
from aiservice.infrastructure.training.spec import TrainingError

BINARY = ["no", "yes"]
THREE = ["cat", "dog", "eel"]


def test_binary_scores_use_the_second_class_as_positive() -> None:
    truth = np.array(["no", "yes", "yes", "no", "yes"])
    positive = np.array([0.2, 0.9, 0.4, 0.6, 0.7])
    metrics = classification_metrics(truth, np.column_stack([1 - positive, positive]), BINARY)
    expected_auc = roc_auc_score(truth == "yes", positive)
    expected_f1 = f1_score(truth == "yes", positive > 0.5)
    assert (metrics["roc_auc"], metrics["f1"]) == (round(expected_auc, 6), round(expected_f1, 6))


def test_multiclass_f1_is_the_macro_average() -> None:
    truth = np.array(["cat", "dog", "eel", "eel"])
    probabilities = np.eye(3)[[0, 1, 1, 2]]  # one eel taken for a dog
    metrics = classification_metrics(truth, probabilities, THREE)
    assert metrics["f1"] == round(f1_score([0, 1, 2, 2], [0, 1, 1, 2], average="macro"), 6)


def test_roc_auc_is_left_out_when_a_class_is_missing_from_the_truth() -> None:
    truth = np.array(["cat", "dog", "dog"])
    metrics = classification_metrics(truth, np.full((3, 3), 1 / 3), THREE)
    assert sorted(metrics) == ["accuracy", "f1", "log_loss"]


def test_label_outside_the_classes_counts_as_wrong_and_leaves_out_log_loss() -> None:
    truth = np.array(["cat", "fox"])
    metrics = classification_metrics(truth, np.eye(3)[[0, 0]], THREE)
    assert (metrics["accuracy"], "log_loss" in metrics) == (0.5, False)


def test_model_without_probabilities_gets_accuracy_and_f1_from_its_labels() -> None:
    truth = np.array([3, 5, 5, 3])
    metrics = classification_metrics(truth, None, [3, 5], predicted=np.array([3, 5, 3, 3]))
    assert metrics == {"accuracy": 0.75, "f1": round(2 / 3, 6)}


def test_regression_metrics_are_rmse_mae_and_r2_rounded_to_six_decimals() -> None:
    metrics = regression_metrics(np.array([1.0, 2.0, 3.0]), np.array([1.0, 2.0, 4.0]))
    assert metrics == {"rmse": round(np.sqrt(1 / 3), 6), "mae": round(1 / 3, 6), "r2": 0.5}


def test_non_finite_predictions_are_a_fit_error() -> None:
    with pytest.raises(TrainingError) as raised:
        regression_metrics(np.array([1.0, 2.0]), np.array([1.0, np.nan]))
    assert raised.value.stage == "fit"
