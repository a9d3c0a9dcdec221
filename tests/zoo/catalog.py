"""The zoo: models built the way users build them, each with a handful of inputs and the framework's
own in-process answers to them.

Each builder trains a small model on bundled or generated data, saves it in the format its users
ship, and answers the zoo's inputs itself (a DataFrame for a model fitted on one, ``None`` as NaN).
"""

from __future__ import annotations

import io
import tempfile
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

IRIS_CLASSES = ["setosa", "versicolor", "virginica"]


@dataclass
class Answers:
    """What the framework itself answers to the zoo's inputs: one label (as callers see it) and one
    probability row per input for classifiers, one value per input for regressors."""

    labels: list[Any] | None = None
    probabilities: np.ndarray | None = None  # columns in the order of ``classes``
    values: np.ndarray | None = None
    classes: list[Any] | None = None  # caller-facing class names, in probability column order


@dataclass
class ZooModel:
    name: str
    framework: str
    filename: str
    artifact: bytes
    inputs: list[dict[str, Any]]  # /predict inputs
    answers: Answers
    model: dict[str, Any] = field(default_factory=dict)  # inputSchema, outputSchema, category...
    compiles: bool = False  # ONNX compilation is expected to be kept (it verified)


def _skops(estimator: Any) -> bytes:
    import skops.io as sio

    return bytes(sio.dumps(estimator))


def _frame(inputs: list[dict[str, Any]], columns: list[str]) -> pd.DataFrame:
    """The zoo's inputs as the DataFrame a user would hand the model: ``None`` is NaN."""
    frame = pd.DataFrame([[row[c] for c in columns] for row in inputs], columns=columns)
    return frame.fillna(value=np.nan) if frame.isna().any().any() else frame


def _classifier_answers(estimator: Any, x: Any, classes: list[Any] | None = None) -> Answers:
    """Labels by class position (``classes`` renames the model's own, as an outputSchema does)."""
    own = list(estimator.classes_)
    names = classes or [c.item() if hasattr(c, "item") else c for c in own]
    predicted = estimator.predict(x)
    return Answers(
        labels=[names[own.index(p)] for p in predicted],
        probabilities=np.asarray(estimator.predict_proba(x), dtype=np.float64),
        classes=names,
    )


def _rows(frame: pd.DataFrame, picks: list[int]) -> list[dict[str, Any]]:
    out = []
    for i in picks:
        row = {}
        for column, value in frame.iloc[i].items():
            if isinstance(value, float) and np.isnan(value):
                row[str(column)] = None
            elif isinstance(value, np.generic):
                row[str(column)] = value.item()
            else:
                row[str(column)] = value
        out.append(row)
    return out


def _tabular(frame: pd.DataFrame, types: dict[str, str] | None = None, **extra: Any) -> dict[str, Any]:
    types = types or {}
    features = []
    for column in frame.columns:
        feature: dict[str, Any] = {"name": str(column), "type": types.get(str(column), "number")}
        feature.update(extra.get(str(column), {}))
        features.append(feature)
    return {"type": "tabular", "features": features}


# -- scikit-learn ---------------------------------------------------------------------------------


def _sklearn_classifier(
    name: str, model: Any, frame: pd.DataFrame, picks: list[int], compiles: bool = True, **fields: Any
) -> ZooModel:
    """A classifier fitted on ``frame``, asked about its rows ``picks``, saved with skops."""
    inputs = _rows(frame, picks)
    answers = _classifier_answers(model, _frame(inputs, list(frame.columns)))
    return ZooModel(name, "sklearn", "model.skops", _skops(model), inputs, answers, fields, compiles)


def _shop_pipeline(encoder: Any, final: Any) -> Any:
    """The issue's shape: an encoder over the string columns, a scaler over the numbers, then ``final``."""
    from sklearn.compose import ColumnTransformer
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import StandardScaler

    columns = ColumnTransformer(
        [("cat", encoder, ["color", "plan"]), ("num", StandardScaler(), ["age", "income"])]
    )
    return Pipeline([("pre", columns), ("clf", final)])


def iris_frame() -> tuple[pd.DataFrame, np.ndarray]:
    from sklearn.datasets import load_iris

    data = load_iris(as_frame=True)
    frame = data.data.rename(columns=lambda c: c.replace(" (cm)", "").replace(" ", "_"))
    return frame, np.asarray(IRIS_CLASSES, dtype=object)[data.target.to_numpy()]


PICKS = [0, 7, 51, 60, 101, 120, 133, 149]


def pipeline_scaled_logistic() -> ZooModel:
    """StandardScaler then LogisticRegression, fitted on a DataFrame with string class labels."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    frame, y = iris_frame()
    model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=500)).fit(frame, y)
    return _sklearn_classifier("pipeline-scaled-logistic", model, frame, PICKS)


def shop_frame(rows: int = 400, missing: bool = False) -> tuple[pd.DataFrame, np.ndarray]:
    """Customers with string categories and numbers; the target depends on both."""
    rng = np.random.default_rng(7)
    frame = pd.DataFrame(
        {
            "color": rng.choice(["red", "green", "blue"], rows),
            "age": rng.integers(18, 80, rows).astype(np.float64),
            "plan": rng.choice(["free", "pro", "team"], rows),
            "income": np.round(rng.normal(50_000, 15_000, rows), 2),
        }
    )
    score = (
        (frame.color == "red") * 1.5
        + (frame.plan == "pro") * 1.0
        + (frame.age - 50) / 20
        + (frame.income - 50_000) / 20_000
    )
    y = np.where(score + rng.normal(0, 0.5, rows) > 1.0, "churn", "stay")
    if missing:
        frame.loc[rng.random(rows) < 0.1, "age"] = np.nan
        frame.loc[rng.random(rows) < 0.1, "plan"] = np.nan
    return frame, y


def column_transformer_forest() -> ZooModel:
    """The issue's shape: OneHotEncoder over string columns and StandardScaler over numbers, then a
    RandomForestClassifier, fitted on a DataFrame."""
    from sklearn.ensemble import RandomForestClassifier
    from sklearn.preprocessing import OneHotEncoder

    frame, y = shop_frame()
    forest = RandomForestClassifier(n_estimators=20, max_depth=6, random_state=0)
    model = _shop_pipeline(OneHotEncoder(), forest).fit(frame, y)
    return _sklearn_classifier("column-transformer-forest", model, frame, [0, 1, 2, 3, 10, 20, 30, 40])


def imputed_categories_logistic() -> ZooModel:
    """SimpleImputer in front of each kind of column (most frequent text, median number) and a
    OneHotEncoder that ignores unknown plans; fitted on a DataFrame with missing values. Declared
    with a schema that marks the two gappy features nullable, in another order than the DataFrame."""
    from sklearn.compose import ColumnTransformer
    from sklearn.impute import SimpleImputer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import Pipeline, make_pipeline
    from sklearn.preprocessing import OneHotEncoder, StandardScaler

    frame, y = shop_frame(missing=True)
    categorical = make_pipeline(
        SimpleImputer(strategy="most_frequent"), OneHotEncoder(handle_unknown="ignore")
    )
    numeric = make_pipeline(SimpleImputer(strategy="median"), StandardScaler())
    model = Pipeline(
        [
            (
                "pre",
                ColumnTransformer(
                    [("cat", categorical, ["color", "plan"]), ("num", numeric, ["age", "income"])]
                ),
            ),
            ("clf", LogisticRegression(max_iter=500)),
        ]
    ).fit(frame, y)
    picks = [int(i) for i in np.flatnonzero(frame.isna().any(axis=1).to_numpy())[:4]] + [0, 1, 2, 3]
    schema = {
        "type": "tabular",
        "features": [
            {"name": "income", "type": "number"},
            {"name": "plan", "type": "string", "nullable": True},
            {"name": "age", "type": "number", "nullable": True},
            {"name": "color", "type": "category", "values": ["blue", "green", "red"]},
        ],
    }
    # skl2onnx converts a text imputer only when its missing value is a string: served natively.
    return _sklearn_classifier(
        "imputed-categories-logistic", model, frame, picks, compiles=False, inputSchema=schema
    )


def diabetes_frame(missing: bool = False) -> tuple[pd.DataFrame, np.ndarray]:
    from sklearn.datasets import load_diabetes

    data = load_diabetes(as_frame=True)
    frame = data.data.copy()
    if missing:
        rng = np.random.default_rng(3)
        for column in ("bmi", "bp", "s5"):
            frame.loc[rng.random(len(frame)) < 0.15, column] = np.nan
    return frame, data.target.to_numpy()


def imputed_ridge() -> ZooModel:
    """SimpleImputer and Ridge regression on a DataFrame with gaps; no schema declared: the version's
    own columns give it (nullable where the model answers with a gap)."""
    from sklearn.impute import SimpleImputer
    from sklearn.linear_model import Ridge
    from sklearn.pipeline import make_pipeline

    frame, y = diabetes_frame(missing=True)
    model = make_pipeline(SimpleImputer(strategy="mean"), Ridge(alpha=0.5)).fit(frame, y)
    picks = [int(i) for i in np.flatnonzero(frame.isna().any(axis=1).to_numpy())[:5]] + [0, 1, 2]
    inputs = _rows(frame, picks)
    return ZooModel(
        "imputed-ridge",
        "sklearn",
        "model.skops",
        _skops(model),
        inputs,
        Answers(values=np.asarray(model.predict(_frame(inputs, list(frame.columns))), dtype=np.float64)),
        compiles=True,
    )


def hist_gradient_boosting_with_nan() -> ZooModel:
    """HistGradientBoostingClassifier handles NaN itself; fitted on a DataFrame with gaps and
    declared with nullable features."""
    from sklearn.datasets import load_breast_cancer
    from sklearn.ensemble import HistGradientBoostingClassifier

    data = load_breast_cancer(as_frame=True)
    frame = data.data.iloc[:, :6].rename(columns=lambda c: c.replace(" ", "_"))
    rng = np.random.default_rng(5)
    for column in frame.columns[:3]:
        frame.loc[rng.random(len(frame)) < 0.1, column] = np.nan
    y = np.where(data.target.to_numpy() == 1, "benign", "malignant")
    model = HistGradientBoostingClassifier(max_iter=30, random_state=0).fit(frame, y)
    picks = [int(i) for i in np.flatnonzero(frame.isna().any(axis=1).to_numpy())[:5]] + [0, 1, 2]
    inputs = _rows(frame, picks)
    nullable = {str(c): {"nullable": True} for c in frame.columns[:3]}
    return ZooModel(
        "hist-gradient-boosting-nan",
        "sklearn",
        "model.skops",
        _skops(model),
        inputs,
        _classifier_answers(model, _frame(inputs, list(frame.columns))),
        model={"inputSchema": _tabular(frame, **nullable)},
        compiles=False,  # skl2onnx 1.20 fails on this booster's numpy 2 attributes: served natively
    )


def gradient_boosting_regressor() -> ZooModel:
    """GradientBoostingRegressor fitted on a plain array; the schema names its features."""
    from sklearn.ensemble import GradientBoostingRegressor

    frame, y = diabetes_frame()
    x = frame.to_numpy()
    model = GradientBoostingRegressor(n_estimators=40, max_depth=3, random_state=0).fit(x, y)
    inputs = _rows(frame, [0, 5, 10, 50, 100, 200, 300, 400])
    rows = np.asarray([[row[c] for c in frame.columns] for row in inputs])
    return ZooModel(
        "gradient-boosting-regressor",
        "sklearn",
        "model.skops",
        _skops(model),
        inputs,
        Answers(values=np.asarray(model.predict(rows), dtype=np.float64)),
        model={"inputSchema": _tabular(frame)},
        compiles=True,
    )


def reordered_linear() -> ZooModel:
    """The issue's reproduction: y = 100a + 10b + c fitted on DataFrame [a, b, c], declared [c, b, a]."""
    from sklearn.linear_model import LinearRegression

    rng = np.random.default_rng(1)
    frame = pd.DataFrame(rng.normal(size=(60, 3)), columns=["a", "b", "c"])
    y = 100 * frame.a + 10 * frame.b + frame.c
    model = LinearRegression().fit(frame, y)
    inputs = [{"a": 1.0, "b": 2.0, "c": 3.0}, *_rows(frame, [0, 1, 2, 3, 4])]
    schema = {"type": "tabular", "features": [{"name": n} for n in ("c", "b", "a")]}
    return ZooModel(
        "reordered-linear",
        "sklearn",
        "model.skops",
        _skops(model),
        inputs,
        Answers(values=np.asarray(model.predict(_frame(inputs, ["a", "b", "c"])), dtype=np.float64)),
        model={"inputSchema": schema},
        compiles=True,
    )


def boolean_and_integer_tree() -> ZooModel:
    """A DecisionTreeClassifier over integer and boolean columns of a DataFrame; the schema declares
    their types, so true/false and whole numbers are what callers send."""
    from sklearn.tree import DecisionTreeClassifier

    rng = np.random.default_rng(11)
    frame = pd.DataFrame(
        {"rooms": rng.integers(1, 7, 300), "garden": rng.random(300) < 0.4, "area": rng.normal(80, 20, 300)}
    )
    y = np.where(frame.rooms * 10 + frame.garden * 25 + frame.area / 4 > 60, "expensive", "cheap")
    model = DecisionTreeClassifier(max_depth=4, random_state=0).fit(frame, y)
    inputs = _rows(frame, [0, 1, 2, 3, 4, 5])
    answers_frame = _frame(inputs, list(frame.columns)).astype({"rooms": np.int64, "garden": bool})
    schema = _tabular(frame, {"rooms": "integer", "garden": "boolean"})
    return ZooModel(
        "boolean-and-integer-tree",
        "sklearn",
        "model.skops",
        _skops(model),
        inputs,
        _classifier_answers(model, answers_frame),
        model={"inputSchema": schema},
        compiles=True,
    )


# -- XGBoost --------------------------------------------------------------------------------------


def xgboost_multiclass(fmt: str) -> ZooModel:
    """A multi-class XGBClassifier: fitted on a DataFrame (names kept in the booster) for JSON, on
    an array with a declared schema for UBJ; the outputSchema names the classes."""
    import xgboost as xgb

    frame, y = iris_frame()
    codes = np.asarray([IRIS_CLASSES.index(v) for v in y])
    model = xgb.XGBClassifier(n_estimators=15, max_depth=3, random_state=0)
    fitted_on = frame if fmt == "json" else frame.to_numpy()
    model.fit(fitted_on, codes)
    inputs = _rows(frame, PICKS)
    x = _frame(inputs, list(frame.columns))
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / f"model.{fmt}"
        model.save_model(path)
        artifact = path.read_bytes()
    answers = _classifier_answers(model, x if fmt == "json" else x.to_numpy(), IRIS_CLASSES)
    extra: dict[str, Any] = {"outputSchema": {"classes": IRIS_CLASSES}}
    if fmt == "ubj":
        extra["inputSchema"] = _tabular(frame)
    return ZooModel(
        f"xgboost-multiclass-{fmt}",
        "xgboost",
        f"model.{fmt}",
        artifact,
        inputs,
        answers,
        model=extra,
        compiles=True,
    )


# -- LightGBM -------------------------------------------------------------------------------------


def lightgbm_multiclass() -> ZooModel:
    """A multi-class LGBMClassifier fitted on a DataFrame (its names kept in the booster), saved as
    LightGBM's text format from ``booster_``; the outputSchema names the classes."""
    import lightgbm as lgb

    frame, y = iris_frame()
    codes = np.asarray([IRIS_CLASSES.index(v) for v in y])
    model = lgb.LGBMClassifier(n_estimators=20, num_leaves=7, random_state=0, verbose=-1).fit(frame, codes)
    inputs = _rows(frame, PICKS)
    return ZooModel(
        "lightgbm-multiclass",
        "lightgbm",
        "model.txt",
        str(model.booster_.model_to_string()).encode(),
        inputs,
        _classifier_answers(model, _frame(inputs, list(frame.columns)), IRIS_CLASSES),
        model={"outputSchema": {"classes": IRIS_CLASSES}},
        compiles=True,
    )


# -- Keras ----------------------------------------------------------------------------------------


def _keras_bytes(net: Any) -> bytes:
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "model.keras"
        with warnings.catch_warnings():  # Keras's saver hands TF tensors to numpy 2, which warns
            warnings.filterwarnings("ignore", "__array__ implementation", DeprecationWarning)
            net.save(path)
        return path.read_bytes()


def keras_softmax_classifier() -> ZooModel:
    """A functional Keras softmax classifier registered with ``category: classification`` and the
    outputSchema's classes only (no configuration.task), taking a 4-value tensor per sample."""
    import keras

    keras.utils.set_random_seed(0)
    frame, _y = iris_frame()
    inputs_layer = keras.Input((4,), name="measurements")
    hidden = keras.layers.Dense(8, activation="relu")(inputs_layer)
    net = keras.Model(inputs_layer, keras.layers.Dense(3, activation="softmax")(hidden))
    x = frame.to_numpy(dtype=np.float32)[PICKS]
    probabilities = np.asarray(net(x), dtype=np.float64)
    return ZooModel(
        "keras-softmax-classifier",
        "keras",
        "model.keras",
        _keras_bytes(net),
        [{"x": row.tolist()} for row in x],
        Answers(
            labels=[IRIS_CLASSES[i] for i in probabilities.argmax(axis=1)],
            probabilities=probabilities,
            classes=IRIS_CLASSES,
        ),
        model={
            "category": "classification",
            "inputSchema": {"type": "tensor", "name": "x", "dtype": "float32", "shape": [4]},
            "outputSchema": {"classes": IRIS_CLASSES},
        },
    )


def keras_named_inputs_regressor() -> ZooModel:
    """A functional Keras regressor of named one-value inputs; no schema declared: its input names
    are its features."""
    import keras

    keras.utils.set_random_seed(1)
    frame, _y = diabetes_frame()
    names = ["age", "bmi", "bp"]
    layers = [keras.Input((1,), name=n) for n in names]
    joined = keras.layers.Concatenate()(layers)
    net = keras.Model(layers, keras.layers.Dense(1)(keras.layers.Dense(6, activation="relu")(joined)))
    inputs = _rows(frame[names], [0, 1, 2, 3, 4, 5])
    columns = [np.asarray([[row[n]] for row in inputs], dtype=np.float32) for n in names]
    values = np.asarray(net(columns), dtype=np.float64).reshape(-1)
    return ZooModel(
        "keras-named-inputs-regressor",
        "keras",
        "model.keras",
        _keras_bytes(net),
        inputs,
        Answers(values=values),
        model={"category": "regression"},
    )


# -- PyTorch and ONNX ------------------------------------------------------------------------------


def _iris_mlp(seed: int) -> tuple[Any, np.ndarray]:
    import torch

    torch.manual_seed(seed)
    net = torch.nn.Sequential(torch.nn.Linear(4, 16), torch.nn.ReLU(), torch.nn.Linear(16, 3)).eval()
    frame, _y = iris_frame()
    return net, frame.to_numpy(dtype=np.float32)[PICKS]


def _softmax_answers(net: Any, x: np.ndarray) -> Answers:
    import torch

    with torch.inference_mode():
        probabilities = torch.softmax(net(torch.from_numpy(x)), dim=1).double().numpy()
    return Answers(
        labels=[IRIS_CLASSES[i] for i in probabilities.argmax(axis=1)],
        probabilities=probabilities,
        classes=IRIS_CLASSES,
    )


def torchscript_mlp() -> ZooModel:
    """A ``torch.jit.script`` MLP classifier registered with ``configuration.task`` and the
    outputSchema's classes; no input schema: it takes ``{"features": [...]}``."""
    import torch

    net, x = _iris_mlp(0)
    buffer = io.BytesIO()
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", "`torch.jit", DeprecationWarning)
        torch.jit.save(torch.jit.script(net), buffer)
    return ZooModel(
        "torchscript-mlp",
        "pytorch",
        "model.pt",
        buffer.getvalue(),
        [{"features": row.tolist()} for row in x],
        _softmax_answers(net, x),
        model={
            "configuration": {"task": "classification", "inputShape": [4]},
            "outputSchema": {"classes": IRIS_CLASSES},
        },
        compiles=True,
    )


def torch_export_regressor() -> ZooModel:
    """A ``torch.export`` program (dynamic batch) regressing on diabetes, with a tensor schema."""
    import torch

    torch.manual_seed(2)
    net = torch.nn.Sequential(torch.nn.Linear(10, 8), torch.nn.Tanh(), torch.nn.Linear(8, 1)).eval()
    frame, _y = diabetes_frame()
    x = frame.to_numpy(dtype=np.float32)[[0, 1, 2, 3, 4, 5]]
    batch = torch.export.Dim("batch")
    program = torch.export.export(net, (torch.from_numpy(x[:2]),), dynamic_shapes=({0: batch},))
    buffer = io.BytesIO()
    torch.export.save(program, buffer)
    with torch.inference_mode():
        values = net(torch.from_numpy(x)).double().numpy().reshape(-1)
    return ZooModel(
        "torch-export-regressor",
        "pytorch",
        "model.pt2",
        buffer.getvalue(),
        [{"x": row.tolist()} for row in x],
        Answers(values=values),
        model={
            "category": "regression",
            "inputSchema": {"type": "tensor", "name": "x", "dtype": "float32", "shape": [10]},
        },
    )


def onnx_from_torch() -> ZooModel:
    """An MLP exported by ``torch.onnx.export`` (logits out), served as an ONNX model that the
    outputSchema names the classes of and ``category`` makes a classifier."""
    import torch

    net, x = _iris_mlp(3)
    with tempfile.TemporaryDirectory() as folder, warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # the TorchScript-based exporter users still run
        path = Path(folder) / "model.onnx"
        torch.onnx.export(
            net,
            (torch.from_numpy(x[:2]),),
            str(path),
            input_names=["input"],
            output_names=["logits"],
            dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}},
            dynamo=False,
            external_data=False,
        )
        artifact = path.read_bytes()
    return ZooModel(
        "onnx-from-torch",
        "onnx",
        "model.onnx",
        artifact,
        [{"features": row.tolist()} for row in x],
        _softmax_answers(net, x),
        model={"category": "classification", "outputSchema": {"classes": IRIS_CLASSES}},
    )


def onnx_from_dataframe_pipeline() -> ZooModel:
    """A ColumnTransformer pipeline over string and number columns converted by skl2onnx (one input
    per column), uploaded as an ONNX model: its graph inputs are its features."""
    from skl2onnx import to_onnx
    from skl2onnx.common.data_types import FloatTensorType, StringTensorType
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import OneHotEncoder

    frame, y = shop_frame()
    encoder = OneHotEncoder(handle_unknown="ignore")
    model = _shop_pipeline(encoder, LogisticRegression(max_iter=500)).fit(frame, y)
    types = [
        (c, StringTensorType([None, 1]) if c in ("color", "plan") else FloatTensorType([None, 1]))
        for c in frame.columns
    ]
    onx = to_onnx(model, initial_types=types, options={id(model.steps[-1][1]): {"zipmap": False}})
    inputs = _rows(frame, [0, 1, 2, 3, 4, 5])
    return ZooModel(
        "onnx-from-dataframe-pipeline",
        "onnx",
        "model.onnx",
        bytes(onx.SerializeToString()),
        inputs,
        _classifier_answers(model, _frame(inputs, list(frame.columns))),
    )


BUILDERS: dict[str, Callable[[], ZooModel]] = {
    "pipeline-scaled-logistic": pipeline_scaled_logistic,
    "column-transformer-forest": column_transformer_forest,
    "imputed-categories-logistic": imputed_categories_logistic,
    "imputed-ridge": imputed_ridge,
    "hist-gradient-boosting-nan": hist_gradient_boosting_with_nan,
    "gradient-boosting-regressor": gradient_boosting_regressor,
    "reordered-linear": reordered_linear,
    "boolean-and-integer-tree": boolean_and_integer_tree,
    "xgboost-multiclass-json": lambda: xgboost_multiclass("json"),
    "xgboost-multiclass-ubj": lambda: xgboost_multiclass("ubj"),
    "lightgbm-multiclass": lightgbm_multiclass,
    "keras-softmax-classifier": keras_softmax_classifier,
    "keras-named-inputs-regressor": keras_named_inputs_regressor,
    "torchscript-mlp": torchscript_mlp,
    "torch-export-regressor": torch_export_regressor,
    "onnx-from-torch": onnx_from_torch,
    "onnx-from-dataframe-pipeline": onnx_from_dataframe_pipeline,
}
