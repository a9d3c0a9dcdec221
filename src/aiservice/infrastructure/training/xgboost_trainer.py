"""XGBoost: fit XGBClassifier or XGBRegressor and save the native UBJSON booster the xgboost runtime loads.

XGBoost wants classes as 0..K-1, so labels are encoded here (sorted) and ``TrainedModel.classes`` gives the
label of each index. The runtime reports those indices as its classes: the job must declare the labels
(the model's ``outputSchema.classes``) for callers to see them. Progress comes every few boosting rounds
with the training and validation loss; early stopping (``early_stopping_rounds``) watches the validation
set, and the runtime predicts with the best iteration the booster records.
"""

from __future__ import annotations

import json
import logging
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from aiservice.application.ports import Prediction
from aiservice.infrastructure.training import catalog
from aiservice.infrastructure.training.common import (
    NO_CUDA,
    check_tables,
    check_task,
    cuda_index,
    first_line,
    fit_error,
    json_safe,
    logged_warnings,
    targets,
    wrapper_prediction,
)
from aiservice.infrastructure.training.spec import Progress, Table, TrainedModel, TrainingError, TrainSpec

FILENAME = "model.ubj"
DEFAULT_ROUNDS = 100
REPORT_EVERY = 10  # boosting rounds between progress reports
EVAL_NAMES = {"validation_0": "", "validation_1": "val_"}  # eval_set order: training, then validation
log = logging.getLogger(__name__)


@dataclass
class FittedXGBoost:
    model: Any  # the sklearn wrapper: XGBClassifier or XGBRegressor
    classes: np.ndarray | None
    params: dict[str, Any]
    device: str

    def predict(self, X: np.ndarray) -> Prediction:
        return wrapper_prediction(self.model, self.classes, X)

    def save(self, out_dir: Path) -> TrainedModel:
        path = out_dir / FILENAME
        try:
            self.model.get_booster().save_model(str(path))
        except Exception as exc:
            raise TrainingError("save", f"The booster cannot be saved: {first_line(exc)}") from exc
        return TrainedModel(
            path=path,
            filename=FILENAME,
            classes=None if self.classes is None else [json_safe(c) for c in self.classes],
            params=self.params,
            device=self.device,
            configuration={},  # the runtime reads everything from the booster; labels go in outputSchema
        )


def fit(
    spec: TrainSpec, train: Table, validation: Table | None, report: Callable[[Progress], None]
) -> FittedXGBoost:
    import xgboost

    check_task(spec)
    _check_params(spec, validation)
    check_tables(train, validation, ndim=2)
    target = targets(spec.task, train, validation)
    device = cuda_device(spec.device)
    params = {"n_estimators": DEFAULT_ROUNDS, "random_state": spec.seed, **spec.params}
    wrapper = xgboost.XGBClassifier if spec.task == "classification" else xgboost.XGBRegressor
    eval_set = [(train.X, target.train)]
    if validation is not None and target.validation is not None:
        eval_set.append((validation.X, target.validation))
    callback = _progress_callback(report, int(params["n_estimators"]))
    try:
        model = wrapper(**params, device=device, callbacks=[callback])
        with logged_warnings():
            model.fit(train.X, target.train, eval_set=eval_set, verbose=False)
    except (TypeError, ValueError) as exc:  # XGBoostError is a ValueError
        raise fit_error(exc, spec.params, otherwise="fit") from exc
    _check_device_used(model, device)
    effective = {k: v for k, v in model.get_params().items() if v is not None and k != "callbacks"}
    model.set_params(device="cpu")  # predict here on host arrays without a device-mismatch fallback
    _name_features(model, train.feature_names)
    return FittedXGBoost(model, target.classes, json_safe(effective), device)


def _check_params(spec: TrainSpec, validation: Table | None) -> None:
    task = catalog.task_of("xgboost", spec.algorithm)
    if task is None:
        raise TrainingError("params", f"Use XGBClassifier or XGBRegressor, not {spec.algorithm!r}.")
    if task != spec.task:
        raise TrainingError("params", f"{spec.algorithm} does {task}, but this job trains {spec.task}.")
    errors = catalog.validate("xgboost", spec.algorithm, spec.params)
    if errors:
        raise TrainingError("params", "; ".join(f"{e.field}: {e.message}" for e in errors))
    if spec.params.get("early_stopping_rounds") and validation is None:
        raise TrainingError("params", "early_stopping_rounds needs validation data to watch.")


def cuda_device(name: str) -> str:
    """The device to train on, "cpu" or "cuda:N", once XGBoost has shown it can use that GPU: left to
    itself, XGBoost falls back to the CPU with a mere warning."""
    import xgboost

    index = cuda_index(name)
    if index is None:
        return "cpu"
    if not xgboost.build_info().get("USE_CUDA"):
        raise TrainingError("device", f"{NO_CUDA} (this XGBoost is built without CUDA).")
    device = f"cuda:{index}"
    probe = xgboost.XGBRegressor(n_estimators=1, device=device)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # "No visible GPU is found": the check below says it better
            probe.fit(np.zeros((2, 1), dtype=np.float32), np.zeros(2))
    except ValueError as exc:
        raise TrainingError("device", f"{NO_CUDA} ({first_line(exc)}).") from exc
    _check_device_used(probe, device)
    return device


def _check_device_used(model: Any, device: str) -> None:
    config = json.loads(model.get_booster().save_config())
    used = str(config["learner"]["generic_param"]["device"])
    if device != "cpu" and not used.startswith("cuda"):
        raise TrainingError("device", NO_CUDA)


def _name_features(model: Any, names: list[str]) -> None:
    """Name the booster's features, so the served signature and explanations carry the column names."""
    booster = model.get_booster()
    if len(names) != booster.num_features():
        return
    try:
        booster.feature_names = [str(n) for n in names]
    except ValueError as exc:  # duplicates, or characters XGBoost refuses ([, ], <)
        log.info("feature names kept off the booster: %s", first_line(exc))


def _progress_callback(report: Callable[[Progress], None], rounds: int) -> Any:
    import xgboost

    class ReportRounds(xgboost.callback.TrainingCallback):
        """Reports every REPORT_EVERY rounds, and the last round however training ends."""

        def __init__(self) -> None:
            super().__init__()
            self.reported = 0
            self.latest: tuple[int, dict[str, float]] | None = None

        def after_iteration(self, model: Any, epoch: int, evals_log: Any) -> bool:
            done = epoch + 1
            self.latest = (done, _latest(evals_log))
            if done % REPORT_EVERY == 0 or done == rounds:
                self._report()
            return False

        def after_training(self, model: Any) -> Any:
            if self.latest is not None and self.latest[0] != self.reported:
                self._report()  # early stopping ended between two reports
            return model

        def _report(self) -> None:
            assert self.latest is not None
            done, metrics = self.latest
            self.reported = done
            report(Progress(epoch=done, epochs=rounds, metrics=metrics))

    return ReportRounds()


def _latest(evals_log: Any) -> dict[str, float]:
    """The last value of each metric: the first as loss / val_loss, any others under their own names."""
    metrics: dict[str, float] = {}
    for data_name, by_metric in evals_log.items():
        prefix = EVAL_NAMES.get(data_name, f"{data_name}_")
        for position, (metric, values) in enumerate(by_metric.items()):
            name = "loss" if position == 0 else metric
            metrics[f"{prefix}{name}"] = float(values[-1])
    return metrics
