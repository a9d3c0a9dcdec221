"""XGBoost: the native JSON and UBJSON model files of ``Booster.save_model`` (and of the sklearn wrappers).

Both formats are data, not code, so nothing is unpickled. The task comes from the booster's objective;
the sklearn wrappers store class labels as 0..K-1, so those are the classes we report.
``inplace_predict`` is thread-safe, so concurrent ``predict`` calls need no lock.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from aiservice.application.ports import Attributions, LoadSpec, Prediction
from aiservice.domain.errors import InvalidArtifact
from aiservice.domain.models import Framework
from aiservice.domain.signature import Column, ColumnType, Signature, Task, TensorSpec
from aiservice.infrastructure.runtimes.plugin import FrameworkPlugin, Trainer, by_task
from aiservice.infrastructure.training.catalog import validate_xgboost, xgboost_task

# Objectives whose output is a probability, a margin to squash, or a hard label.
PROBABILITY_OBJECTIVES = ("binary:logistic", "multi:softprob")
MARGIN_OBJECTIVES = ("binary:logitraw", "multi:softmax")
LABEL_OBJECTIVES = ("binary:hinge",)
REGRESSION_PREFIXES = ("reg:", "count:", "survival:")


class XGBoostModel:
    def __init__(self, booster: Any) -> None:
        self.booster = booster
        config = json.loads(booster.save_config())["learner"]
        self.objective: str = config["objective"]["name"]
        self.n_classes = int(config["learner_model_param"].get("num_class", "0"))
        best = booster.attr("best_iteration")
        # Models saved after early stopping keep every tree; predict with the best ones, as sklearn does.
        self._iterations = (0, int(best) + 1) if best is not None else (0, 0)
        self.signature = xgboost_signature(booster, self.objective, self.n_classes)

    def predict(self, batch: np.ndarray) -> Prediction:
        task = self.signature.task
        margin = self.objective in MARGIN_OBJECTIVES
        raw = np.asarray(
            self.booster.inplace_predict(
                batch, iteration_range=self._iterations, predict_type="margin" if margin else "value"
            )
        )
        if task != "classification" or self.objective in LABEL_OBJECTIVES:
            return Prediction(values=raw)
        probabilities = _probabilities(raw, margin)
        return Prediction(values=probabilities.argmax(axis=1), probabilities=probabilities)

    def explain(self, batch: np.ndarray) -> Attributions | None:
        import xgboost as xgb

        matrix = xgb.DMatrix(
            batch, feature_names=self.booster.feature_names, feature_types=self.booster.feature_types
        )
        contributions = np.asarray(
            self.booster.predict(matrix, pred_contribs=True, iteration_range=self._iterations)
        )
        if contributions.ndim == 3:  # [N, C, F + 1]: keep each row's predicted class
            predicted = self.predict(batch).values.astype(np.int64)
            contributions = contributions[np.arange(len(batch)), predicted]
        return Attributions("tree-shap", contributions[..., :-1])  # the last column is the bias


def _probabilities(raw: np.ndarray, margin: bool) -> np.ndarray:
    if raw.ndim == 1:  # binary: the positive class
        positive = 1.0 / (1.0 + np.exp(-raw)) if margin else raw
        return np.column_stack([1.0 - positive, positive])
    if margin:
        shifted = np.exp(raw - raw.max(axis=1, keepdims=True))
        return np.asarray(shifted / shifted.sum(axis=1, keepdims=True))
    return raw


def _task(objective: str) -> Task:
    if objective.startswith(("binary:", "multi:")):
        return "classification"
    if objective.startswith(REGRESSION_PREFIXES):
        return "regression"
    return "other"  # ranking and anything newer


def xgboost_signature(booster: Any, objective: str, n_classes: int) -> Signature:
    task = _task(objective)
    names = booster.feature_names
    outputs = [TensorSpec("prediction", "float32", (-1,))]
    classes: tuple[Any, ...] | None = None
    if task == "classification":
        classes = tuple(range(max(n_classes, 2)))
        outputs = [TensorSpec("label", "int64", (-1,))]
        if objective not in LABEL_OBJECTIVES:
            outputs.append(TensorSpec("probabilities", "float32", (-1, len(classes))))
    return Signature(
        inputs=(TensorSpec("input", "float32", (-1, int(booster.num_features()))),),
        outputs=tuple(outputs),
        task=task,
        classes=classes,
        extra={"objective": objective, "trees": int(booster.num_boosted_rounds())},
        columns=_columns(names, booster.feature_types, int(booster.num_features())),
    )


# XGBoost's feature types: quantitative, integer, indicator; a categorical feature ("c") takes its code.
_COLUMN_TYPES: dict[str, ColumnType] = {"q": "number", "float": "number", "int": "integer", "i": "boolean"}


def _columns(names: list[str] | None, types: list[str] | None, count: int) -> tuple[Column, ...]:
    """One column per feature, named when the booster was fitted with names (a DataFrame, say)."""
    labels = [str(n) for n in names] if names else [None] * count
    kinds = list(types) if types and len(types) == count else ["q"] * count
    return tuple(
        Column(label, _COLUMN_TYPES.get(kind, "number")) for label, kind in zip(labels, kinds, strict=True)
    )


class XGBoostRuntime:
    def available(self) -> str | None:
        try:
            import xgboost  # noqa: F401
        except ImportError as exc:
            return f"install aiservice[xgboost] ({exc.name} is missing)"
        return None

    def load(self, artifact: Path, spec: LoadSpec) -> XGBoostModel:
        import xgboost as xgb

        # From a buffer XGBoost tells JSON from UBJSON by content, whatever the stored file is named.
        raw = bytearray(artifact.read_bytes())
        if not raw.startswith(b"{"):
            raise InvalidArtifact(
                f"{spec.filename!r} is not an XGBoost JSON or UBJSON model; save it with "
                "Booster.save_model('model.json') or 'model.ubj'."
            )
        booster = xgb.Booster()
        try:
            booster.load_model(raw)
        except Exception as exc:  # XGBoostError, or a ValueError from the Python side
            raise InvalidArtifact(f"The XGBoost model cannot be loaded: {_first_line(exc)}") from exc
        threads = spec.configuration.get("numThreads")
        if threads:
            booster.set_param({"nthread": int(threads)})
        return XGBoostModel(booster)


def _first_line(exc: Exception) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0][:300]


def to_onnx(native: Any, sample: np.ndarray, signature: Signature) -> tuple[bytes, dict[str, Any]]:
    """Through onnxmltools (opset 15)."""
    from onnxmltools import convert_xgboost
    from onnxmltools.convert.common.data_types import FloatTensorType

    booster = native.booster
    if booster.feature_names:  # the converter reads features as f0, f1...: by position, as we feed them
        booster = booster.copy()
        booster.feature_names = None
        booster.feature_types = None
    onx = convert_xgboost(
        booster, initial_types=[("input", FloatTensorType([None, sample.shape[1]]))], target_opset=15
    )
    return bytes(onx.SerializeToString()), {}


def _trains_on_gpu() -> bool:
    from aiservice.infrastructure.training import xgboost_trainer
    from aiservice.infrastructure.training.spec import TrainingError

    try:
        xgboost_trainer.cuda_device("cuda")
    except TrainingError:
        return False
    return True


def plugin() -> FrameworkPlugin:
    return FrameworkPlugin(
        name=Framework("xgboost"),
        runtime=XGBoostRuntime(),
        trainer=Trainer(
            "aiservice.infrastructure.training.xgboost_trainer",
            validate_xgboost,
            task=xgboost_task,
            gpu=_trains_on_gpu,
            default=by_task("XGBClassifier", "XGBRegressor"),
        ),
        to_onnx=to_onnx,
        preload=("xgboost",),
    )
