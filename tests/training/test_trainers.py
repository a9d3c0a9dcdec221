"""Framework trainers: each writes an artifact its serving runtime loads and that predicts exactly like
the model in memory, reports progress as it trains, and fails with a stage the user can act on."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch
from sklearn.datasets import load_digits, load_iris, make_regression

from aiservice.application.ports import LoadedModel, LoadSpec
from aiservice.domain.models import Framework
from aiservice.infrastructure.runtimes.registry import FrameworkRegistry
from aiservice.infrastructure.training import keras_trainer, trainers
from aiservice.infrastructure.training.metrics import classification_metrics, regression_metrics
from aiservice.infrastructure.training.spec import (
    FittedModel,
    Progress,
    Table,
    TrainedModel,
    TrainingError,
    TrainSpec,
)

NO_CUDA = "CUDA was requested but no GPU is available"


def split(X: np.ndarray, y: np.ndarray, n_train: int, names: list[str] | None = None) -> tuple[Table, Table]:
    order = np.random.default_rng(0).permutation(len(X))
    train, validation = order[:n_train], order[n_train:]
    features = names or [f"f{i}" for i in range(X.shape[1])] if X.ndim == 2 else []
    return Table(X[train], y[train], features), Table(X[validation], y[validation], features)


def iris() -> tuple[Table, Table]:
    """Iris with its species names as labels: trainers must carry string labels through."""
    data = load_iris()
    labels = np.asarray(data.target_names)[data.target]
    return split(data.data.astype(np.float32), labels, 110, list(data.feature_names))


def regression() -> tuple[Table, Table]:
    X, y = make_regression(300, 6, n_informative=3, noise=5.0, random_state=0)
    return split(X.astype(np.float32), y, 225)


def digits() -> tuple[Table, Table]:
    """8x8 grey digits as channels-last images in [0, 1], as the service decodes images."""
    data = load_digits()
    images = (data.images[..., None] / 16.0).astype(np.float32)
    return split(images, data.target, 1200)


DATA: dict[str, Callable[[], tuple[Table, Table]]] = {
    "iris": iris,
    "regression": regression,
    "digits": digits,
}
GOOD_ENOUGH = {"iris": ("accuracy", 0.85), "digits": ("accuracy", 0.75), "regression": ("r2", 0.9)}
MLP = {"hiddenSizes": [16]}
CNN = {"channels": [8], "hiddenSizes": [32]}
IMAGE = {"inputShape": [8, 8, 1]}
CLASSIFY, REGRESS = "classification", "regression"
CASES: dict[str, tuple[TrainSpec, str]] = {
    "sklearn-classifier": (
        TrainSpec("sklearn", "sklearn.ensemble.RandomForestClassifier", {"n_estimators": 20}, CLASSIFY),
        "iris",
    ),
    "sklearn-regressor": (
        TrainSpec("sklearn", "sklearn.linear_model.Ridge", {"alpha": 0.5}, REGRESS),
        "regression",
    ),
    "xgboost-classifier": (
        TrainSpec("xgboost", "XGBClassifier", {"n_estimators": 25, "max_depth": 3}, CLASSIFY),
        "iris",
    ),
    "xgboost-regressor": (
        TrainSpec("xgboost", "XGBRegressor", {"n_estimators": 60, "max_depth": 3}, REGRESS),
        "regression",
    ),
    "pytorch-mlp-classifier": (
        TrainSpec("pytorch", "mlp", MLP, CLASSIFY, epochs=30, batch_size=16, learning_rate=1e-2),
        "iris",
    ),
    "pytorch-mlp-regressor": (
        TrainSpec("pytorch", "mlp", MLP, REGRESS, epochs=40, batch_size=16, learning_rate=1e-2),
        "regression",
    ),
    "pytorch-cnn-classifier": (
        TrainSpec("pytorch", "cnn", CNN, CLASSIFY, epochs=3, learning_rate=3e-3, configuration=IMAGE),
        "digits",
    ),
    "keras-mlp-classifier": (
        TrainSpec("keras", "mlp", MLP, CLASSIFY, epochs=20, batch_size=16, learning_rate=1e-2),
        "iris",
    ),
    "keras-cnn-classifier": (
        TrainSpec("keras", "cnn", CNN, CLASSIFY, epochs=3, learning_rate=3e-3, configuration=IMAGE),
        "digits",
    ),
}


@dataclass
class Run:
    spec: TrainSpec
    data: str
    fitted: FittedModel
    trained: TrainedModel
    reports: list[Progress]
    served: LoadedModel
    validation: Table


@pytest.fixture(scope="module")
def runtimes() -> FrameworkRegistry:
    return FrameworkRegistry.discover()


# A group per case: every test of a case runs on the worker that trained it, never trained twice.
@pytest.fixture(
    scope="module",
    params=[pytest.param(case, marks=pytest.mark.xdist_group(f"trainers-{case}")) for case in CASES],
)
def run(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory, runtimes: FrameworkRegistry
) -> Run:
    """One training per case, shared by the tests below, its artifact loaded through the serving runtime."""
    spec, data = CASES[request.param]
    train, validation = DATA[data]()
    reports: list[Progress] = []
    fitted = trainers.fit(spec, train, validation, reports.append)
    trained = fitted.save(tmp_path_factory.mktemp(request.param))
    served = serve(runtimes, spec, trained)
    return Run(spec, data, fitted, trained, reports, served, validation)


def serve(runtimes: FrameworkRegistry, spec: TrainSpec, trained: TrainedModel) -> LoadedModel:
    framework = Framework(spec.framework)
    configuration = {**spec.configuration, **trained.configuration}
    load_spec = LoadSpec(framework=framework, filename=trained.filename, configuration=configuration)
    return runtimes.get(framework).load(trained.path, load_spec)


def served_labels(run: Run) -> np.ndarray:
    """The served model's labels; XGBoost serves class indices, which TrainedModel.classes names."""
    values = np.asarray(run.served.predict(run.validation.X).values)
    if run.spec.framework == "xgboost":
        return np.asarray(np.asarray(run.trained.classes, dtype=object)[values.astype(np.int64)])
    return values


def test_served_artifact_predicts_what_the_fitted_model_predicts(run: Run) -> None:
    fitted = run.fitted.predict(run.validation.X)
    served = run.served.predict(run.validation.X)
    if run.spec.task == REGRESS:
        np.testing.assert_allclose(served.values, fitted.values, rtol=1e-5, atol=1e-4)
    else:
        assert served.probabilities is not None and fitted.probabilities is not None
        assert served_labels(run).tolist() == fitted.values.tolist()
        np.testing.assert_allclose(served.probabilities, fitted.probabilities, atol=1e-5)


def test_served_artifact_scores_well_on_held_out_data(run: Run) -> None:
    served = run.served.predict(run.validation.X)
    if run.spec.task == REGRESS:
        metrics = regression_metrics(run.validation.y, served.values)
    else:
        assert run.trained.classes is not None
        metrics = classification_metrics(run.validation.y, served.probabilities, run.trained.classes)
    name, least = GOOD_ENOUGH[run.data]
    assert metrics[name] > least


def test_served_classes_are_the_trained_labels_in_output_order(run: Run) -> None:
    classes = run.served.signature.classes
    if run.spec.task == REGRESS:
        assert (classes, run.trained.classes) == (None, None)
    elif run.spec.framework == "xgboost":  # indices, named by TrainedModel.classes
        assert classes == tuple(range(len(run.trained.classes or ())))
    else:
        assert classes == tuple(np.unique(DATA[run.data]()[0].y).tolist())


def test_progress_counts_up_to_the_last_epoch(run: Run) -> None:
    epochs = [report.epoch for report in run.reports]
    total = {report.epochs for report in run.reports}
    assert epochs == sorted(set(epochs)) and epochs[-1] == total.pop() and not total


def test_every_progress_report_carries_finite_validation_metrics(run: Run) -> None:
    for report in run.reports:
        validation = {k: v for k, v in report.metrics.items() if k.startswith("val_")}
        assert validation and all(np.isfinite(list(report.metrics.values())))


def test_trained_model_description_is_plain_json(run: Run) -> None:
    described = {k: v for k, v in dataclasses.asdict(run.trained).items() if k != "path"}
    assert json.loads(json.dumps(described, allow_nan=False)) == described


def test_network_progress_reports_loss_and_validation_loss_every_epoch() -> None:
    train, validation = iris()
    reports: list[Progress] = []
    spec = TrainSpec("pytorch", "mlp", MLP, CLASSIFY, epochs=4)
    trainers.fit(spec, train, validation, reports.append)
    expected = ["accuracy", "loss", "val_accuracy", "val_loss"]
    assert [(r.epoch, sorted(r.metrics)) for r in reports] == [(e, expected) for e in range(1, 5)]


def test_xgboost_reports_every_ten_rounds_and_the_last() -> None:
    train, validation = iris()
    reports: list[Progress] = []
    trainers.fit(
        TrainSpec("xgboost", "XGBClassifier", {"n_estimators": 25}, CLASSIFY),
        train,
        validation,
        reports.append,
    )
    assert [r.epoch for r in reports] == [10, 20, 25]


def test_sklearn_reports_once_at_the_end_with_training_and_validation_scores() -> None:
    train, validation = iris()
    reports: list[Progress] = []
    spec = TrainSpec("sklearn", "sklearn.linear_model.LogisticRegression", {}, CLASSIFY)
    trainers.fit(spec, train, validation, reports.append)
    assert [(r.epoch, r.epochs, "accuracy" in r.metrics, "val_accuracy" in r.metrics) for r in reports] == [
        (1, 1, True, True)
    ]


def test_train_writes_the_artifact_in_out_dir_under_its_registered_name(tmp_path: Path) -> None:
    train, _ = iris()
    spec = TrainSpec("sklearn", "sklearn.tree.DecisionTreeClassifier", {"max_depth": 3}, CLASSIFY)
    trained = trainers.train(spec, train, None, tmp_path / "job", lambda _: None)
    assert (trained.path.parent, trained.path.name, trained.path.is_file()) == (
        tmp_path / "job",
        "model.skops",
        True,
    )


def test_same_seed_trains_the_same_network() -> None:
    train, validation = iris()
    spec = TrainSpec("pytorch", "mlp", {"hiddenSizes": [8], "dropout": 0.1}, CLASSIFY, epochs=3, seed=7)
    first = trainers.fit(spec, train, None, lambda _: None).predict(validation.X)
    second = trainers.fit(spec, train, None, lambda _: None).predict(validation.X)
    assert first.probabilities is not None and second.probabilities is not None
    np.testing.assert_array_equal(first.probabilities, second.probabilities)


def hide_gpus(framework: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Make sure the framework sees no GPU, whatever machine runs the tests."""
    if framework == "pytorch":
        monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    elif framework == "keras":
        monkeypatch.setattr(keras_trainer, "gpu_count", lambda: 0)
    else:
        monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")  # XGBoost's own GPU probe then finds none


@pytest.mark.parametrize(
    ("framework", "algorithm"), [("pytorch", "mlp"), ("keras", "mlp"), ("xgboost", "XGBClassifier")]
)
def test_cuda_requested_without_a_gpu_is_a_device_error(
    framework: str, algorithm: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    hide_gpus(framework, monkeypatch)
    train, _ = iris()
    with pytest.raises(TrainingError) as raised:
        trainers.fit(
            TrainSpec(framework, algorithm, {}, CLASSIFY, device="cuda"), train, None, lambda _: None
        )
    assert (raised.value.stage, raised.value.message) == ("device", NO_CUDA)


@pytest.mark.parametrize(
    ("framework", "algorithm", "device"),
    [("pytorch", "mlp", "tpu"), ("sklearn", "sklearn.linear_model.LogisticRegression", "cuda")],
)
def test_device_a_trainer_cannot_use_is_a_device_error(framework: str, algorithm: str, device: str) -> None:
    train, _ = iris()
    with pytest.raises(TrainingError) as raised:
        trainers.fit(
            TrainSpec(framework, algorithm, {}, CLASSIFY, device=device), train, None, lambda _: None
        )
    assert raised.value.stage == "device"


def failure(spec: TrainSpec, train: Table, validation: Table | None = None) -> TrainingError:
    with pytest.raises(TrainingError) as raised:
        trainers.fit(spec, train, validation, lambda _: None)
    return raised.value


def test_invalid_parameter_value_is_a_params_error_naming_it() -> None:
    spec = TrainSpec("sklearn", "sklearn.ensemble.RandomForestClassifier", {"n_estimators": -1}, CLASSIFY)
    error = failure(spec, iris()[0])
    assert (error.stage, "n_estimators" in error.message) == ("params", True)


def test_parameters_that_clash_only_when_fitting_are_a_params_error_naming_them() -> None:
    params = {"penalty": "l1", "loss": "hinge"}
    error = failure(TrainSpec("sklearn", "sklearn.svm.LinearSVC", params, CLASSIFY), iris()[0])
    assert (error.stage, error.message.startswith("penalty, loss:")) == ("params", True)


def test_xgboost_choice_it_refuses_while_fitting_is_a_params_error_naming_it() -> None:
    spec = TrainSpec("xgboost", "XGBClassifier", {"n_estimators": 2, "tree_method": "nonsense"}, CLASSIFY)
    error = failure(spec, iris()[0])
    assert (error.stage, error.message.startswith("tree_method:")) == ("params", True)


def test_xgboost_early_stopping_without_validation_is_a_params_error() -> None:
    spec = TrainSpec("xgboost", "XGBClassifier", {"early_stopping_rounds": 3}, CLASSIFY)
    assert failure(spec, iris()[0]).stage == "params"


def test_network_learning_rate_that_is_not_positive_is_a_params_error() -> None:
    spec = TrainSpec("keras", "mlp", {}, CLASSIFY, learning_rate=0.0)
    assert failure(spec, iris()[0]).stage == "params"


def test_regressor_asked_to_classify_is_a_params_error() -> None:
    spec = TrainSpec("sklearn", "sklearn.linear_model.Ridge", {}, CLASSIFY)
    assert failure(spec, iris()[0]).stage == "params"


def test_regression_target_that_is_not_numeric_is_a_data_error() -> None:
    spec = TrainSpec("pytorch", "mlp", {}, REGRESS)
    assert failure(spec, iris()[0]).stage == "data"


def test_single_class_is_a_data_error() -> None:
    train, _ = iris()
    one_class = Table(train.X, np.full(len(train.y), "setosa"), train.feature_names)
    spec = TrainSpec("xgboost", "XGBClassifier", {}, CLASSIFY)
    assert failure(spec, one_class).stage == "data"


def test_validation_label_never_seen_in_training_is_a_data_error() -> None:
    train, validation = iris()
    relabelled = Table(validation.X, np.where(validation.y == "setosa", "rosa", validation.y), [])
    spec = TrainSpec("sklearn", "sklearn.linear_model.LogisticRegression", {}, CLASSIFY)
    error = failure(spec, train, relabelled)
    assert (error.stage, "'rosa'" in error.message) == ("data", True)


def test_missing_values_are_a_data_error_for_an_estimator_that_cannot_take_them() -> None:
    train, _ = iris()
    X = train.X.copy()
    X[0, 0] = np.nan
    spec = TrainSpec("sklearn", "sklearn.linear_model.LogisticRegression", {}, CLASSIFY)
    assert failure(spec, Table(X, train.y, [])).stage == "data"


def test_rows_that_disagree_with_the_declared_input_shape_are_a_data_error() -> None:
    spec = TrainSpec("pytorch", "mlp", {}, CLASSIFY, configuration={"inputShape": [5]})
    assert failure(spec, iris()[0]).stage == "data"


def test_images_given_to_an_mlp_are_a_data_error() -> None:
    spec = TrainSpec("keras", "mlp", {}, CLASSIFY)
    assert failure(spec, digits()[0]).stage == "data"


def test_importing_the_trainers_imports_no_framework() -> None:
    """Run in a fresh interpreter: this test process has imported every framework already."""
    code = (
        "import sys\n"
        "from aiservice.infrastructure.training import trainers\n"
        "frameworks = {'torch', 'tensorflow', 'keras', 'xgboost', 'sklearn', 'skops'}\n"
        "print(sorted(frameworks & {name.split('.')[0] for name in sys.modules}))\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]"
