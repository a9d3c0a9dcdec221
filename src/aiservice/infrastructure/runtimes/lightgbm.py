"""LightGBM, whole: its runtime, ONNX conversion and trainer, as one framework plugin.

Served from LightGBM's native text format (``Booster.save_model("model.txt")``, which is also what
``LGBMClassifier.booster_.save_model`` writes): data, never a pickle. The task comes from the objective
(binary and multiclass are classifiers with classes 0..K-1, the regression objectives regress); a
booster's feature names are its columns, except LightGBM's defaults (``Column_0``...), which name
nothing. Missing values (NaN) go where the trees learnt to send them. Prediction holds no Python
state, so concurrent ``predict`` calls need no lock.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from aiservice.application.ports import Attributions, LoadSpec, Prediction
from aiservice.domain.errors import FieldError, InvalidArtifact
from aiservice.domain.models import Framework
from aiservice.domain.signature import Column, Signature, Task, TensorSpec
from aiservice.infrastructure.runtimes.plugin import FrameworkPlugin, Trainer, by_task
from aiservice.infrastructure.training.catalog import Booster, validate_booster

if TYPE_CHECKING:  # the trainer's types; a worker imports them, serving never needs to
    from aiservice.infrastructure.training.spec import Progress, Table, TrainedModel, TrainSpec

FILENAME = "model.txt"
CLASSIFIERS = ("binary", "multiclass", "multiclassova")
RANKERS = ("lambdarank", "rank_xendcg")
DEFAULT_NAME = re.compile(r"^Column_\d+$")  # what LightGBM calls a feature it was given no name for


class LightGBMModel:
    def __init__(self, booster: Any, objective: str, threads: int | None = None) -> None:
        self.booster = booster
        self.objective = objective
        self.signature = lightgbm_signature(booster, objective)
        self._options = {"num_threads": threads} if threads else {}

    def _raw(self, batch: np.ndarray, **options: Any) -> np.ndarray:
        return np.asarray(
            self.booster.predict(np.asarray(batch, dtype=np.float64), **self._options, **options)
        )

    def predict(self, batch: np.ndarray) -> Prediction:
        raw = self._raw(batch)
        if self.signature.task != "classification":
            return Prediction(values=raw)
        probabilities = raw if raw.ndim == 2 else np.column_stack([1.0 - raw, raw])
        return Prediction(values=probabilities.argmax(axis=1), probabilities=probabilities)

    def explain(self, batch: np.ndarray) -> Attributions | None:
        """TreeSHAP contributions without the bias; a classifier's are those of each row's predicted class."""
        contributions = self._raw(batch, pred_contrib=True)
        width = self.booster.num_feature() + 1
        if contributions.shape[1] > width:  # multiclass: [N, K * (F + 1)]
            predicted = self.predict(batch).values.astype(np.int64)
            by_class = contributions.reshape(len(batch), -1, width)
            contributions = by_class[np.arange(len(batch)), predicted]
        return Attributions("tree-shap", contributions[:, :-1])


def objective_of(text: str) -> str:
    """The objective's name from the model text's header (``objective=binary sigmoid:1``)."""
    found = re.search(r"^objective=(\S+)", text.split("\nTree=", 1)[0], re.MULTILINE)
    return found.group(1) if found else "custom"


def _task(objective: str) -> Task:
    if objective in CLASSIFIERS:
        return "classification"
    if objective in RANKERS or objective == "custom":
        return "other"
    return "regression"  # regression, regression_l1, huber, fair, poisson, quantile, mape, gamma, tweedie...


def lightgbm_signature(booster: Any, objective: str) -> Signature:
    task = _task(objective)
    features = int(booster.num_feature())
    outputs = [TensorSpec("prediction", "float64", (-1,))]
    classes: tuple[int, ...] | None = None
    if task == "classification":
        classes = tuple(range(max(int(booster.num_model_per_iteration()), 2)))
        outputs = [
            TensorSpec("label", "int64", (-1,)),
            TensorSpec("probabilities", "float64", (-1, len(classes))),
        ]
    names = [None if DEFAULT_NAME.match(n) else n for n in booster.feature_name()]
    return Signature(
        inputs=(TensorSpec("input", "float64", (-1, features)),),
        outputs=tuple(outputs),
        task=task,
        classes=classes,
        extra={"objective": objective, "trees": int(booster.num_trees())},
        columns=tuple(Column(name, "number") for name in names),
    )


class LightGBMRuntime:
    def available(self) -> str | None:
        try:
            import lightgbm  # noqa: F401
        except ImportError as exc:
            return f"install aiservice[lightgbm] ({exc.name} is missing)"
        return None

    def load(self, artifact: Path, spec: LoadSpec) -> LightGBMModel:
        import lightgbm as lgb

        raw = artifact.read_bytes()
        if not raw.startswith(b"tree\n"):
            raise InvalidArtifact(
                f"{spec.filename!r} is not a LightGBM text model; save it with "
                "booster.save_model('model.txt') (or model.booster_.save_model for the sklearn wrappers)."
            )
        try:
            text = raw.decode()
            booster = lgb.Booster(model_str=text)
        except Exception as exc:  # UnicodeDecodeError, LightGBMError
            raise InvalidArtifact(f"The LightGBM model cannot be loaded: {_first_line(exc)}") from exc
        threads = spec.configuration.get("numThreads")
        return LightGBMModel(booster, objective_of(text), int(threads) if threads else None)


def to_onnx(native: Any, sample: np.ndarray, signature: Signature) -> tuple[bytes, dict[str, Any]]:
    """Through onnxmltools (opset 15, probabilities as one tensor); its float32 trees are then checked
    against the native model, as every conversion is."""
    from onnxmltools import convert_lightgbm
    from onnxmltools.convert.common.data_types import FloatTensorType

    onx = convert_lightgbm(
        native.booster,
        initial_types=[("input", FloatTensorType([None, sample.shape[1]]))],
        target_opset=15,
        zipmap=False,
    )
    return bytes(onx.SerializeToString()), {}


# -- training --------------------------------------------------------------------------------------

ALGORITHMS = {"LGBMClassifier": "classification", "LGBMRegressor": "regression"}
OBJECTIVES = {
    "LGBMClassifier": CLASSIFIERS,
    "LGBMRegressor": ("regression", "huber", "fair", "poisson", "quantile", "mape", "gamma", "tweedie"),
}
RESERVED = {
    "device_type": "LightGBM trains on the CPU here",
    "n_jobs": "set the job's resourceConfig.cpu instead",
    "importance_type": "not used: the served model explains with TreeSHAP",
}
BOUNDS: dict[str, tuple[type, float, float, bool]] = {
    "n_estimators": (int, 1, 100_000, False),
    "num_leaves": (int, 2, 131_072, False),
    "max_depth": (int, -1, 64, False),
    "learning_rate": (float, 0.0, float("inf"), True),
    "subsample": (float, 0.0, 1.0, True),
    "colsample_bytree": (float, 0.0, 1.0, True),
    "min_child_samples": (int, 0, 1_000_000, False),
    "reg_alpha": (float, 0.0, float("inf"), False),
    "reg_lambda": (float, 0.0, float("inf"), False),
}
REPORT_EVERY = 10  # boosting rounds between progress reports


def validate(algorithm: str, params: dict[str, Any]) -> list[FieldError]:
    import lightgbm as lgb

    known = set(lgb.LGBMModel().get_params())
    return validate_booster(Booster(ALGORITHMS, known, RESERVED, BOUNDS, OBJECTIVES), algorithm, params)


@dataclass
class FittedLightGBM:
    model: Any  # LGBMClassifier or LGBMRegressor
    classes: np.ndarray | None
    params: dict[str, Any]

    def predict(self, X: np.ndarray) -> Prediction:
        from aiservice.infrastructure.training.common import wrapper_prediction

        return wrapper_prediction(self.model, self.classes, X)

    def save(self, out_dir: Path) -> TrainedModel:
        from aiservice.infrastructure.training.common import json_safe
        from aiservice.infrastructure.training.spec import TrainedModel

        path = out_dir / FILENAME
        self.model.booster_.save_model(str(path))
        classes = None if self.classes is None else [json_safe(c) for c in self.classes]
        return TrainedModel(
            path=path, filename=FILENAME, classes=classes, params=self.params, device="cpu", configuration={}
        )


def fit(
    spec: TrainSpec, train: Table, validation: Table | None, report: Callable[[Progress], None]
) -> FittedLightGBM:
    """An LGBMClassifier or LGBMRegressor on tables in memory; progress every ``REPORT_EVERY`` rounds."""
    import lightgbm as lgb

    from aiservice.infrastructure.training import common
    from aiservice.infrastructure.training.spec import TrainingError

    common.check_task(spec)
    if ALGORITHMS.get(spec.algorithm) != spec.task:
        raise TrainingError("params", f"{spec.algorithm} cannot train {spec.task} here.")
    if common.cuda_index(spec.device) is not None:
        raise TrainingError("device", f"{common.NO_CUDA} (LightGBM trains on the CPU here).")
    common.check_tables(train, validation, ndim=2)
    target = common.targets(spec.task, train, validation)
    params = {"n_estimators": 100, "random_state": spec.seed, "verbose": -1, **spec.params}
    wrapper = lgb.LGBMClassifier if spec.task == "classification" else lgb.LGBMRegressor
    eval_set = None
    if validation is not None and target.validation is not None:
        eval_set = [(validation.X, target.validation)]
    # A DataFrame's column names become the booster's, and so the served model's columns.
    names = [str(n) for n in train.feature_names] if len(train.feature_names) == train.X.shape[1] else "auto"
    try:
        model: Any = wrapper(**params)
        with common.logged_warnings():
            model.fit(
                train.X,
                target.train,
                eval_set=eval_set,
                feature_name=names,
                callbacks=[_progress(report, int(params["n_estimators"]))],
            )
    except (TypeError, ValueError, lgb.basic.LightGBMError) as exc:
        raise common.fit_error(exc, spec.params, otherwise="fit") from exc
    return FittedLightGBM(model, target.classes, common.json_safe(model.get_params()))


def _progress(report: Callable[[Progress], None], rounds: int) -> Callable[[Any], None]:
    from aiservice.infrastructure.training.spec import Progress

    def after_round(env: Any) -> None:
        done = env.iteration + 1
        if done % REPORT_EVERY == 0 or done == rounds:
            metrics = {
                f"val_{name}": float(value) for _data, name, value, _bigger in env.evaluation_result_list
            }
            report(Progress(epoch=done, epochs=rounds, metrics=metrics))

    return after_round


def plugin() -> FrameworkPlugin:
    return FrameworkPlugin(
        name=Framework("lightgbm"),
        runtime=LightGBMRuntime(),
        trainer=Trainer(
            __name__, validate, task=ALGORITHMS.get, default=by_task("LGBMClassifier", "LGBMRegressor")
        ),
        to_onnx=to_onnx,
        preload=("lightgbm",),
    )


def _first_line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0][:300]
