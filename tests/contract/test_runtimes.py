"""One suite for the Runtime port, over every framework plugin the registry finds installed (not a list
written here): garbage bytes are refused, a tiny real model loads with a signature and answers in the
right shapes with its classes in its probability columns' order, and a missing framework is reported.

A new plugin gets these tests by being installed; until ``TINY`` can build a model of it, they fail.
"""

from __future__ import annotations

import sys
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from sklearn.datasets import load_iris

from aiservice.application.ports import LoadSpec
from aiservice.domain.errors import InvalidArtifact, Unavailable
from aiservice.infrastructure.runtimes.plugin import FrameworkPlugin
from aiservice.infrastructure.runtimes.registry import FrameworkRegistry

X, Y = load_iris(return_X_y=True)
X = X.astype(np.float32)
ROWS = X[[0, 1, 60, 70, 120, 140]]
PLUGINS = FrameworkRegistry.discover().plugins()
# The top-level modules the plugins import their frameworks from: hidden to prove each says so.
FRAMEWORK_MODULES = ("sklearn", "skops", "xgboost", "lightgbm", "onnx", "onnxruntime", "torch", "keras")
FRAMEWORK_MODULES += ("tensorflow",)

pytestmark = pytest.mark.filterwarnings("ignore:`torch.jit.script` is deprecated:DeprecationWarning")


@dataclass
class Tiny:
    """A small iris classifier saved as its framework's users save it, and the framework's own answer."""

    path: Path
    probabilities: Callable[[np.ndarray], np.ndarray]
    configuration: dict[str, Any] = field(default_factory=dict)


def sklearn(tmp_path: Path) -> Tiny:
    from sklearn.linear_model import LogisticRegression

    from tests.runtimes.test_sklearn_runtime import dump

    fitted = LogisticRegression(max_iter=500).fit(X, Y)
    return Tiny(dump(tmp_path, fitted), fitted.predict_proba)


def xgboost(tmp_path: Path) -> Tiny:
    import xgboost as xgb

    from tests.runtimes.test_xgboost_runtime import save

    fitted = xgb.XGBClassifier(n_estimators=5, max_depth=2).fit(X, Y)
    return Tiny(save(tmp_path, fitted, "model.json"), fitted.predict_proba)


def lightgbm(tmp_path: Path) -> Tiny:
    from tests.runtimes.test_lightgbm_runtime import classifier, save

    fitted = classifier()
    return Tiny(save(tmp_path, fitted), fitted.predict_proba)


def onnx(tmp_path: Path) -> Tiny:
    from sklearn.linear_model import LogisticRegression

    from tests.runtimes.test_onnx_runtime import convert

    fitted = LogisticRegression(max_iter=500).fit(X, Y)
    return Tiny(convert(tmp_path, fitted), fitted.predict_proba)


def pytorch(tmp_path: Path) -> Tiny:
    import torch

    from tests.runtimes.test_torch_runtime import expected, network, script

    module = network()

    def probabilities(rows: np.ndarray) -> np.ndarray:
        return torch.softmax(torch.from_numpy(expected(module, rows)), dim=1).numpy()

    return Tiny(script(tmp_path, module), probabilities, {"task": "classification", "inputShape": [4]})


def keras(tmp_path: Path) -> Tiny:
    from tests.runtimes.test_keras_runtime import expected, network, save_keras

    net = network()
    return Tiny(save_keras(tmp_path, net), lambda rows: expected(net, rows), {"task": "classification"})


def tensorflow(tmp_path: Path) -> Tiny:
    from tests.runtimes.test_keras_runtime import expected, network, save_zipped

    net = network()
    return Tiny(save_zipped(tmp_path, net), lambda rows: expected(net, rows), {"task": "classification"})


TINY: dict[str, Callable[[Path], Tiny]] = {
    f.__name__: f for f in (sklearn, xgboost, lightgbm, onnx, pytorch, keras, tensorflow)
}


def tiny(plugin: FrameworkPlugin, tmp_path: Path) -> tuple[Tiny, LoadSpec]:
    build = TINY.get(str(plugin.name))
    assert build is not None, f"no tiny {plugin.name} model: add a builder to TINY for the new plugin"
    with warnings.catch_warnings():  # Keras's saver hands TF tensors to numpy 2, which warns
        warnings.filterwarnings("ignore", "__array__ implementation", DeprecationWarning)
        made = build(tmp_path)
    return made, LoadSpec(plugin.name, made.path.name, configuration=made.configuration)


@pytest.fixture(params=PLUGINS, ids=[str(p.name) for p in PLUGINS])
def plugin(request: pytest.FixtureRequest) -> FrameworkPlugin:
    found: FrameworkPlugin = request.param
    return found


def test_every_framework_we_ship_is_installed_as_a_plugin() -> None:
    assert {str(p.name) for p in PLUGINS} >= set(TINY)


def test_garbage_bytes_are_refused_as_an_invalid_artifact(plugin: FrameworkPlugin, tmp_path: Path) -> None:
    (tmp_path / "tiny").mkdir()
    made, spec = tiny(plugin, tmp_path / "tiny")  # for its file name and load spec
    garbage = tmp_path / made.path.name
    garbage.write_bytes(b"\x00\x01 definitely not a model \xff" * 64)
    with pytest.raises(InvalidArtifact):
        plugin.runtime.load(garbage, spec)


def test_a_tiny_model_loads_with_a_signature_and_answers_in_its_shapes(
    plugin: FrameworkPlugin, tmp_path: Path
) -> None:
    made, spec = tiny(plugin, tmp_path)
    loaded = plugin.runtime.load(made.path, spec)
    signature = loaded.signature
    assert signature.inputs and signature.n_features == 4
    assert signature.task == "classification" and signature.classes is not None
    prediction = loaded.predict(ROWS)
    assert prediction.values.shape == (len(ROWS),)
    assert prediction.probabilities is not None
    assert prediction.probabilities.shape == (len(ROWS), len(signature.classes))


def test_classes_are_in_the_order_of_the_probability_columns(plugin: FrameworkPlugin, tmp_path: Path) -> None:
    made, spec = tiny(plugin, tmp_path)
    loaded = plugin.runtime.load(made.path, spec)
    prediction = loaded.predict(ROWS)
    assert prediction.probabilities is not None and loaded.signature.classes is not None
    np.testing.assert_allclose(prediction.probabilities, made.probabilities(ROWS), rtol=0, atol=1e-5)
    labels = np.asarray(loaded.signature.classes)[prediction.probabilities.argmax(axis=1)]
    np.testing.assert_array_equal(prediction.values, labels)


def test_a_missing_framework_is_reported_not_raised(
    plugin: FrameworkPlugin, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in FRAMEWORK_MODULES:  # ``import x`` now fails as on a machine without x
        monkeypatch.setitem(sys.modules, name, None)
    why = plugin.runtime.available()
    assert why, f"{plugin.name} reports nothing; add its framework's module to FRAMEWORK_MODULES"
    assert "install" in why or "missing" in why
    with pytest.raises(Unavailable) as refused:
        FrameworkRegistry([plugin]).get(plugin.name)
    assert refused.value.code == "runtime-unavailable"
