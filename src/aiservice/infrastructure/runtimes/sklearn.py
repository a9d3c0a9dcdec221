"""scikit-learn: the safe ``skops`` format by default; pickle/joblib only where the tenant allows it.

skops refuses types it does not know; we trust a fixed allow-list of sklearn, numpy and scipy types
(never the list an upload brings) and name every other type in the refusal.
"""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any

import numpy as np

from aiservice.application.ports import Attributions, LoadSpec, Prediction
from aiservice.domain.errors import InvalidArtifact, UntrustedArtifact
from aiservice.domain.models import Framework
from aiservice.domain.signature import Signature, TensorSpec
from aiservice.infrastructure.runtimes.plugin import FrameworkPlugin, Trainer, by_task
from aiservice.infrastructure.runtimes.sklearn_columns import sklearn_columns
from aiservice.infrastructure.training.catalog import sklearn_task, validate_sklearn

TRUSTED_MODULES = ("sklearn.", "numpy.", "scipy.")
PICKLE_SUFFIXES = (".pkl", ".pickle", ".joblib")
ZIP_MAGIC = b"PK\x03\x04"


class SklearnModel:
    """An estimator fitted on a DataFrame is fed a DataFrame with its own column names (text columns
    as their values, numbers as float64), as it was fitted; one fitted on an array gets the array."""

    def __init__(self, estimator: Any) -> None:
        self.estimator = estimator
        self.signature = sklearn_signature(estimator)
        self._proba = self.signature.task == "classification" and hasattr(estimator, "predict_proba")
        columns = self.signature.columns or ()
        self._names = [c.name for c in columns] if self.signature.named_columns else None
        self._numbers = [c.name for c in columns if not c.raw]

    def _input(self, batch: np.ndarray) -> Any:
        if self._names is None:
            return batch
        import pandas as pd

        frame = pd.DataFrame(batch, columns=self._names, copy=False)
        if batch.dtype == object and self._numbers:
            frame = frame.astype(dict.fromkeys(self._numbers, np.float64))
        return frame

    def predict(self, batch: np.ndarray) -> Prediction:
        rows = self._input(batch)
        values = np.asarray(self.estimator.predict(rows))
        probabilities = np.asarray(self.estimator.predict_proba(rows)) if self._proba else None
        return Prediction(values=values, probabilities=probabilities)

    def explain(self, batch: np.ndarray) -> Attributions | None:
        coef = getattr(self.estimator, "coef_", None)
        if coef is None or batch.dtype == object:
            return None
        coef = np.atleast_2d(np.asarray(coef, dtype=np.float64))
        if coef.shape[0] == 1:
            return Attributions("coefficient-x-value", batch * coef[0])
        # Multiclass: the coefficients of each row's predicted class.
        predicted = self.estimator.predict(self._input(batch))
        rows = np.searchsorted(np.asarray(self.estimator.classes_), predicted)
        return Attributions("coefficient-x-value", batch * coef[rows])


def sklearn_signature(estimator: Any) -> Signature:
    n_features = int(getattr(estimator, "n_features_in_", -1))
    classes: Any = getattr(estimator, "classes_", None)
    columns = sklearn_columns(estimator)
    is_classifier = classes is not None
    outputs = [TensorSpec("label", "object" if is_classifier else "float64", (-1,))]
    if is_classifier:
        outputs.append(TensorSpec("probabilities", "float64", (-1, len(classes))))
    raw = any(c.raw for c in columns or ())
    return Signature(
        inputs=(TensorSpec("input", "object" if raw else "float64", (-1, n_features)),),
        outputs=tuple(outputs),
        task="classification" if is_classifier else "regression",
        classes=tuple(c.item() if hasattr(c, "item") else c for c in classes) if is_classifier else None,
        extra={"estimator": type(estimator).__name__},
        columns=columns,
    )


class SklearnRuntime:
    def available(self) -> str | None:
        try:
            import sklearn  # noqa: F401
            import skops.io  # noqa: F401
        except ImportError as exc:
            return f"install aiservice[sklearn] ({exc.name} is missing)"
        return None

    def load(self, artifact: Path, spec: LoadSpec) -> SklearnModel:
        with artifact.open("rb") as handle:
            head = handle.read(4)
        is_pickle = spec.filename.lower().endswith(PICKLE_SUFFIXES) or head[:1] == b"\x80"
        if head == ZIP_MAGIC and not spec.filename.lower().endswith(PICKLE_SUFFIXES):
            estimator = self._load_skops(artifact)
        elif is_pickle:
            estimator = self._load_pickle(artifact, spec)
        else:
            raise InvalidArtifact(
                f"{spec.filename!r} is neither a skops file nor a pickle; save the model with skops.io.dump."
            )
        if not hasattr(estimator, "predict"):
            raise InvalidArtifact(f"The artifact holds a {type(estimator).__name__}, which cannot predict.")
        return SklearnModel(estimator)

    @staticmethod
    def _load_skops(artifact: Path) -> Any:
        import skops.io as sio

        try:
            unknown = sio.get_untrusted_types(file=artifact)
        except Exception as exc:
            raise InvalidArtifact(f"The skops file cannot be read: {exc}") from exc
        refused = sorted(t for t in unknown if not t.startswith(TRUSTED_MODULES))
        if refused:
            raise UntrustedArtifact(
                "The skops file uses types outside the trusted sklearn/numpy/scipy set: "
                f"{', '.join(refused)}.",
                extra={"untrustedTypes": refused},
            )
        try:
            return sio.load(artifact, trusted=unknown)
        except Exception as exc:
            raise InvalidArtifact(f"The skops file cannot be loaded: {exc}") from exc

    @staticmethod
    def _load_pickle(artifact: Path, spec: LoadSpec) -> Any:
        if not spec.allow_pickle:
            raise UntrustedArtifact(
                "Pickle and joblib files run code when loaded, so this tenant does not accept them; "
                "save the model with skops.io.dump, or ask an admin to turn on allowPickle.",
                extra={"format": "pickle"},
            )
        try:
            import joblib

            return joblib.load(artifact)
        except ImportError:
            with artifact.open("rb") as handle:
                return pickle.load(handle)  # the tenant opted in to pickle
        except Exception as exc:
            raise InvalidArtifact(f"The pickle cannot be loaded: {exc}") from exc


def to_onnx(native: Any, sample: np.ndarray, signature: Signature) -> tuple[bytes, dict[str, Any]]:
    """One float tensor when every column is a number and the estimator converts so; else (a
    ColumnTransformer over a DataFrame, text columns) one [N, 1] input per column, named as it is.
    skl2onnx with ZipMap off, so probabilities come out as one tensor."""
    from skl2onnx import to_onnx as convert
    from skl2onnx.common.data_types import FloatTensorType, StringTensorType
    from sklearn.base import is_classifier

    from aiservice.infrastructure.runtimes.onnx_trees import track_missing_values

    estimator = native.estimator
    final = estimator.steps[-1][1] if hasattr(estimator, "steps") else estimator
    options = {id(final): {"zipmap": False}} if is_classifier(final) else None
    columns = signature.columns or ()
    first: Exception | None = None
    if not any(c.raw for c in columns):
        try:
            onx = convert(estimator, sample[:1].astype(np.float32), options=options)
            track_missing_values(onx, final)
            return bytes(onx.SerializeToString()), {}
        except Exception as exc:
            if not signature.named_columns:
                raise
            first = exc  # perhaps a ColumnTransformer selecting by name: one input per column next
    if not signature.named_columns:
        raise ValueError("text columns without names cannot be given ONNX inputs")
    types = [
        (str(c.name), StringTensorType([None, 1]) if c.raw else FloatTensorType([None, 1])) for c in columns
    ]
    try:
        onx = convert(estimator, initial_types=types, options=options)
    except Exception:
        if first is not None:
            raise first from None  # the one-tensor attempt's reason is the telling one
        raise
    track_missing_values(onx, final)
    return bytes(onx.SerializeToString()), {}


def plugin() -> FrameworkPlugin:
    return FrameworkPlugin(
        name=Framework("sklearn"),
        runtime=SklearnRuntime(),
        trainer=Trainer(
            "aiservice.infrastructure.training.sklearn_trainer",
            validate_sklearn,
            task=sklearn_task,
            default=by_task(
                "sklearn.ensemble.RandomForestClassifier", "sklearn.ensemble.RandomForestRegressor"
            ),
        ),
        to_onnx=to_onnx,
        preload=("sklearn", "skops.io"),
    )
